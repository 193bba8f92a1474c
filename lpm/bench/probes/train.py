"""Training recipe of the Stage probes (`train_probes`), deterministic for a seed.

Stage 1 trains the frame probe (trunk, frame heads, identity embedding) on a cache of rendered
random states of training identities; each batch holds 2 frames of each of `batch_ids`
identities (identity positives), degraded with probability `augment_prob`. Stage 2 freezes the
frame probe and trains the action probe on frame features of windows of real performances.
Stage 3 evaluates on held-out identities and writes weights, card and metrics.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lpm.bench.probes.config import BRANCHES, ProbeConfig, ProbeTrainConfig
from lpm.bench.probes.data import (
    FrameSet,
    apply_degradation,
    degradation_fields,
    degrade_batch,
    iter_sessions,
    render_frame_set,
    sample_degradation,
)
from lpm.bench.probes.evaluate import evaluate_heldout_frames, evaluate_sessions
from lpm.bench.probes.model import (
    AUX_FIELDS,
    FACE_AUX_FIELDS,
    POSE_SCALE_DEG,
    ActionProbeNet,
    FrameProbeNet,
)
from lpm.bench.probes.probes import StageProbes, load_probes, save_probes, to_probe_input
from lpm.data.stage.schema import ACTIONS, SCHEMA_VERSION

TARGETS = {"mouth_r2": 0.9, "expression_acc": 0.9, "identity_eer": 0.05}
"""Held-out acceptance targets of the shipped probes (clean frames)."""


GRAD_CLIP = 5.0
"""Gradient-norm clip applied to each branch (with its heads) separately."""


@dataclass
class TrainResult:
    """What `train_probes` produced."""

    out_dir: Path
    weights: Path
    card: dict
    seconds: float
    """Wall-clock training time including evaluation (seconds)."""


class _JsonlLog:
    def __init__(self, path: Path) -> None:
        self.file = path.open("w")

    def write(self, **row) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _cosine_lr(step: int, total: int, peak: float) -> float:
    warm = max(1, total // 20)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _identity_losses(
    emb: torch.Tensor,
    ids: torch.Tensor,
    proxies: torch.Tensor,
    scale: float = 16.0,
    margin: float = 0.2,
    tau: float = 0.1,
) -> torch.Tensor:
    """CosFace over training-identity proxies + in-batch InfoNCE (positives = same identity)."""
    cos = emb @ F.normalize(proxies, dim=-1).T
    cosface = F.cross_entropy(scale * (cos - margin * F.one_hot(ids, cos.shape[1])), ids)
    sim = emb @ emb.T / tau
    eye = torch.eye(len(ids), dtype=torch.bool)
    sim = sim.masked_fill(eye, -1e4)
    pos = (ids[:, None] == ids[None, :]) & ~eye
    log_p = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    nce = -(log_p * pos).sum(1) / pos.sum(1).clamp(min=1)
    return cosface + nce.mean()


LOSS_BRANCH = {
    "mouth": "face",
    "yaw": "pose",
    "pitch_roll": "pose",
    "blink": "face",
    "expression": "face",
    "face_aux": "face",
    "body_aux": "pose",
    "face_params": "face",
    "identity": "identity",
}
"""The branch each frame loss trains (frozen branches' losses are logged, not optimised)."""


def _frame_loss(
    net: FrameProbeNet,
    proxies: torch.Tensor | None,
    x: torch.Tensor,
    t: dict[str, torch.Tensor],
    ids: torch.Tensor,
    branches: tuple[str, ...],
) -> tuple[torch.Tensor, dict]:
    """Sum of the losses of the trained `branches`, and every loss as a float (for the log);
    `proxies` (identity-class weights) are needed only when the identity branch trains."""
    o = net(x)
    vis = t["face_visible"].float()
    n_vis = vis.sum().clamp(min=1)
    yaw = torch.deg2rad(t["yaw"])
    aux_t = torch.stack([t[k] for k in AUX_FIELDS], -1)
    face_aux = torch.tensor([k in FACE_AUX_FIELDS for k in AUX_FIELDS])
    parts = {
        "mouth": 10 * (vis * (o.mouth_open - t["mouth_open"]) ** 2).sum() / n_vis,
        "yaw": 2 * F.mse_loss(o.yaw_sincos, torch.stack([yaw.sin(), yaw.cos()], -1)),
        "pitch_roll": 2
        * F.smooth_l1_loss(o.pitch_roll, torch.stack([t["pitch"], t["roll"]], -1) / POSE_SCALE_DEG),
        "blink": 5 * (vis * (o.blink - t["blink"]) ** 2).sum() / n_vis,
        "expression": (
            vis
            * F.cross_entropy(
                o.expression_logits, t["expression"], label_smoothing=0.05, reduction="none"
            )
        ).sum()
        / n_vis,
        # brows and gaze are weighted like the mouth: with a plain unweighted MSE the face
        # branch learned none of the raised brow (the action probe then missed every
        # raise_eyebrows); lean and wave are read from the whole frame and are easy
        "face_aux": 10
        * (vis[:, None] * (o.aux[:, face_aux] - aux_t[:, face_aux]) ** 2).mean(1).sum()
        / n_vis,
        "body_aux": F.mse_loss(o.aux[:, ~face_aux], aux_t[:, ~face_aux]),
        # dense expression geometry (smile, brows, lids...): breaks the expression plateau
        "face_params": 5
        * (vis[:, None] * (o.face_params - t["face_params"]) ** 2).mean(1).sum()
        / n_vis,
    }
    if proxies is not None:
        # the identity branch shares no weights with the others, so it needs no down-weighting
        parts["identity"] = _identity_losses(o.identity, ids, proxies)
    loss = sum(v for k, v in parts.items() if LOSS_BRANCH[k] in branches)
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def _curriculum(step: int, cfg: ProbeTrainConfig) -> tuple[float, float]:
    """(share of easy frames, degradation probability) at `step`."""
    ramp = min(1.0, step / max(1.0, cfg.curriculum_frac * cfg.steps))
    p_easy = 1.0 + (cfg.easy_floor - 1.0) * ramp
    p_aug = cfg.augment_prob * (0.25 + 0.75 * ramp)
    return p_easy, p_aug


def _pick_frames(
    rng: np.random.Generator, n: int, groups: tuple[np.ndarray, np.ndarray], p_easy: float
) -> np.ndarray:
    """(n, 2) frame slots within each identity: easy slots with probability `p_easy`."""
    random_slots, easy_slots = groups
    if len(easy_slots) == 0:
        p_easy = 0.0
    out = np.empty((n, 2), np.int64)
    for i in range(n):
        for j in range(2):
            group = easy_slots if rng.random() < p_easy else random_slots
            out[i, j] = group[rng.integers(len(group))]
        if out[i, 0] == out[i, 1]:  # two distinct frames make the identity positive pair
            out[i, 1] = rng.choice(
                np.setdiff1d(np.arange(len(random_slots) + len(easy_slots)), out[i, :1])
            )
    return out


def _train_frame_probe(
    net: FrameProbeNet, fs: FrameSet, cfg: ProbeTrainConfig, log: _JsonlLog, progress: bool
) -> None:
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x7A1]))
    n_ids = len(fs.identity_seeds)
    per_id = len(fs.identity) // n_ids
    easy_row = fs.easy[:per_id] if fs.easy is not None else np.zeros(per_id, bool)
    groups_of_row = (np.flatnonzero(~easy_row), np.flatnonzero(easy_row))
    branches = cfg.train_branches
    all_groups = net.branch_parameters()
    for name, group in all_groups.items():
        for p in group:
            p.requires_grad_(name in branches)
    groups = {k: v for k, v in all_groups.items() if k in branches}
    proxies = None
    if "identity" in branches:
        proxies = nn.Parameter(torch.randn(n_ids, net.config.id_dim) * 0.1)
        groups["identity"] = [*groups["identity"], proxies]
    params = [p for g in groups.values() for p in g]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    targets = {k: torch.from_numpy(v) for k, v in fs.targets.items()}
    net.train()
    for name, module in net.branch_modules().items():
        if name not in branches:
            module.eval()  # frozen: batch-norm statistics stay those of `init_from`
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="frame probe", disable=not progress)
    for step in bar:
        p_easy, p_aug = _curriculum(step, cfg)
        ids = rng.choice(n_ids, size=cfg.batch_ids, replace=False)
        pick = _pick_frames(rng, len(ids), groups_of_row, p_easy)
        idx = (ids[:, None] * per_id + pick).reshape(-1)
        frames = degrade_batch(fs.frames[idx], rng, p_aug)
        x = to_probe_input(frames, net.config.input_size)
        t = {k: v[idx] for k, v in targets.items()}
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, cfg.steps, cfg.lr)
        ids_t = torch.from_numpy(np.repeat(ids, 2))
        loss, parts = _frame_loss(net, proxies, x, t, ids_t, branches)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in groups.values():  # per branch: one loss's spike cannot stall the others
            torch.nn.utils.clip_grad_norm_(group, GRAD_CLIP)
        opt.step()
        if step % 10 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            log.write(
                stage="frame",
                step=step,
                lr=opt.param_groups[0]["lr"],
                loss=float(loss.detach()),
                **parts,
                seconds=round(time.perf_counter() - t0, 2),
            )
    net.eval()
    net.requires_grad_(True)


def _action_features(probes: StageProbes, cfg: ProbeTrainConfig, progress: bool):
    """Frame features of training performance windows: (K, T, F) float32 and (K,) labels."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xAF1]))
    feats, labels = [], []
    sessions = iter_sessions(
        "train",
        cfg.action_sessions,
        cfg.seed,
        cfg.session_seconds,
        probes.config.action_window,
        cfg.render_workers,
        cfg.action_windows_per_event,
    )
    for s in tqdm(sessions, total=cfg.action_sessions, desc="action windows", disable=not progress):
        frames = s.frames
        if rng.random() < cfg.augment_prob:
            d = sample_degradation(rng)  # one degradation for the whole video
            frames = np.stack([apply_degradation(f, d, rng) for f in frames])
        f = probes.frame_features(frames)
        feats.append(f[s.windows])
        labels.append(s.actions)
    return torch.from_numpy(np.concatenate(feats)), torch.from_numpy(np.concatenate(labels))


def _train_action_probe(
    net: ActionProbeNet,
    feats: torch.Tensor,
    labels: torch.Tensor,
    cfg: ProbeTrainConfig,
    log: _JsonlLog,
    progress: bool,
) -> None:
    gen = torch.Generator().manual_seed(cfg.seed)
    counts = torch.bincount(labels, minlength=len(ACTIONS)).float()
    weights = (1.0 / counts.clamp(min=1))[labels]  # class-balanced sampling
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-3)
    net.set_input_stats(feats)
    net.train()
    for step in tqdm(range(cfg.action_steps), desc="action probe", disable=not progress):
        idx = torch.multinomial(weights, 128, replacement=True, generator=gen)
        x = feats[idx]
        x = x + 0.1 * net.feat_std * torch.randn(x.shape, generator=gen)  # 0.1 std per channel
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, cfg.action_steps, cfg.lr)
        loss = F.cross_entropy(net(x), labels[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.action_steps - 1:
            log.write(stage="action", step=step, loss=float(loss.detach()))
    net.eval()


def _initial_frame_net(pcfg: ProbeConfig, cfg: ProbeTrainConfig) -> tuple[FrameProbeNet, dict]:
    """A fresh frame probe, or that of `cfg.init_from` (with its card) for a fine-tune."""
    net = FrameProbeNet(pcfg)
    if cfg.init_from is None:
        return net, {}
    init = load_probes(cfg.init_from)
    for name in BRANCHES:
        if getattr(init.config, name) != getattr(pcfg, name):
            raise ValueError(
                f"ProbeTrainConfig.init_from={cfg.init_from!r} has a different {name} branch "
                f"({getattr(init.config, name)}) from the probe config ({getattr(pcfg, name)})"
            )
    net.load_state_dict(init.frame_net.state_dict())
    return net, init.card


def _param_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def train_probes(
    out_dir: Path | str,
    steps: int | None = None,
    seed: int | None = None,
    *,
    config: ProbeTrainConfig | None = None,
    probe_config: ProbeConfig | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train, evaluate and save the Stage probes.

    Args:
        out_dir: receives `probes.safetensors` (fp16), `card.json` and `metrics.jsonl`.
        steps: overrides `config.steps` (frame-probe optimiser steps).
        seed: overrides `config.seed`.
        config: the training recipe (default `ProbeTrainConfig()`).
        probe_config: network geometry (default `ProbeConfig()`).
        progress: show progress bars.
    """
    cfg = config or ProbeTrainConfig()
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    pcfg = probe_config or ProbeConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = cfg.torch_threads or min(2, torch.get_num_threads())
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    log = _JsonlLog(out / "metrics.jsonl")
    timings: dict[str, float] = {}
    try:
        # 1. frame cache of training identities, 2. frame probe (steps 0: kept as initialised)
        frame_net, init_card = _initial_frame_net(pcfg, cfg)
        action_net = ActionProbeNet(pcfg)
        if cfg.steps > 0:
            t = time.perf_counter()
            fs = render_frame_set(
                "train",
                cfg.train_ids,
                cfg.frames_per_id,
                cfg.seed,
                cfg.render_workers,
                easy_per_id=cfg.easy_per_id,
            )
            timings["render_frames_s"] = time.perf_counter() - t
            t = time.perf_counter()
            _train_frame_probe(frame_net, fs, cfg, log, progress)
            del fs
            timings["train_frame_probe_s"] = time.perf_counter() - t
        frame_net.eval()
        # 3. action probe on frozen frame features of performances
        t = time.perf_counter()
        probes = StageProbes(frame_net, action_net)
        feats, labels = _action_features(probes, cfg, progress)
        _train_action_probe(action_net, feats, labels, cfg, log, progress)
        timings["train_action_probe_s"] = time.perf_counter() - t
        # 4. held-out evaluation (fresh draws; held-out identities only)
        t = time.perf_counter()
        eval_seed = cfg.seed + 1
        frames_eval = evaluate_heldout_frames(
            probes, cfg.eval_ids, cfg.eval_frames_per_id, eval_seed, cfg.render_workers
        )
        sessions = iter_sessions(
            "heldout",
            cfg.eval_sessions,
            eval_seed,
            cfg.session_seconds,
            pcfg.action_window,
            cfg.render_workers,
        )
        session_eval = evaluate_sessions(probes, sessions, eval_seed)
        timings["evaluate_s"] = time.perf_counter() - t
        metrics = {"heldout_frames": frames_eval, "heldout_performances": session_eval}
        log.write(stage="eval", **metrics)
    finally:
        log.close()
    seconds = time.perf_counter() - t_start
    card = {
        "name": "lpm-stage-probes",
        "stage_schema": SCHEMA_VERSION,
        "probe_config": asdict(pcfg),
        "train_config": asdict(cfg),
        "data": {
            "train_split": "train",
            "train_identities": f"distinct_identities('train', {cfg.train_ids}, seed={cfg.seed})",
            "action_sessions": f"iter_sessions('train', {cfg.action_sessions}, seed={cfg.seed})",
            "eval_split": "heldout",
            "eval_seed": eval_seed,
            "degradations": list(degradation_fields()),
        },
        "parameters": {
            "frame_probe": _param_count(frame_net),
            "action_probe": _param_count(action_net),
        },
        "metrics": metrics,
        "targets": TARGETS,
        "training_seconds": round(seconds, 1),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "torch_threads": threads,
    }
    if cfg.init_from is not None:
        # the lineage of a fine-tune: what trained the frame probe it started from
        card["init"] = {
            "from": cfg.init_from,
            **{
                k: init_card.get(k)
                for k in ("train_config", "training_seconds", "torch_threads", "init")
            },
        }
    weights = save_probes(frame_net, action_net, out, card)
    card["weights_bytes"] = weights.stat().st_size
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return TrainResult(out_dir=out, weights=weights, card=card, seconds=seconds)
