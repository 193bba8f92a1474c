"""How much lip-sync, stillness and identity a video autoencoder leaves for the DiT to reach.

The DiT generates latents; the viewer (and the Stage probes) see their decoding. So a model can
lip-sync no better than the ground-truth renderings survive its own VAE. For every case of the
`stage-heldout` suite this encodes and decodes the ground-truth video two ways and scores the
results with the same probes and metrics as `benchmarks/nano_quality.py`:

- ``clip``: the whole clip, as the DiT's latents hold it (groups of 4 frames per latent frame);
- ``frame``: every frame alone (its own latent frame), which isolates the spatial loss from the
  temporal one.

    python benchmarks/vae_ceiling.py [--vae DIR] [--name NAME] [--out runs/heldout]

``--vae`` defaults to the shipped lpm-nano's. Scores land beside the models' in ``--out`` as the
systems ``<name>-clip`` and ``<name>-frame``. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nano_quality import summarise  # noqa: E402

SUITE = "stage-heldout"


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 → (T, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).float().div(127.5).sub(1.0).permute(0, 3, 1, 2)


def _to_frames(video_t3hw: torch.Tensor) -> np.ndarray:
    return ((video_t3hw.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def speech_windows(feats_td: torch.Tensor, starts: list[int], length: int) -> torch.Tensor:
    """(len(starts), length, D) slices of per-frame speech features, silence outside them."""
    from lpm.models.vae.light_decoder import SILENCE_LOG_MEL

    t, d = feats_td.shape
    out = feats_td.new_full((len(starts), length, d), SILENCE_LOG_MEL)
    for i, s in enumerate(starts):
        lo, hi = max(s, 0), min(s + length, t)
        if hi > lo:
            out[i, lo - s : hi - s] = feats_td[lo:hi]
    return out


@torch.no_grad()
def reconstruct(vae, frames: np.ndarray, mode: str, speech: torch.Tensor | None = None):
    """Ground-truth frames through ``vae``: as one clip (``clip``) or frame by frame (``frame``).

    ``speech`` (T, D): the speak audio's features per frame, for a decoder that reads them.
    """
    x = _to_tensor(frames)
    t = x.shape[0]
    past, ahead = vae.decoder.speech_context if getattr(vae, "speech_dim", 0) else (0, 0)
    if speech is not None and not getattr(vae, "speech_dim", 0):
        speech = None
    if mode == "frame":  # decoded frame 3 of a one-latent decode is the frame itself
        windows = None
        if speech is not None:
            windows = speech_windows(speech, [i - 3 - past for i in range(t)], past + 4 + ahead)
        return _to_frames(vae.decode(vae.encode(x[:, :, None]), speech=windows)[:, :, 0])
    n = 1 + 4 * ((t - 1) // 4)
    window = None
    if speech is not None:  # decoded frame j of the whole clip is video frame j - 3
        window = speech_windows(speech, [-3 - past], past + n + 3 + ahead)
    latents = vae.encode(x[:n].permute(1, 0, 2, 3)[None])
    y = _to_frames(vae.decode(latents, speech=window)[0].permute(1, 0, 2, 3))
    if n < t:  # the 1-3 frames past the last whole group: hold the last decoded frame
        y = np.concatenate([y, np.repeat(y[-1:], t - n, axis=0)])
    return y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", type=Path, default=None, help="VAE directory (default: shipped)")
    parser.add_argument("--name", default="vae", help="system name prefix")
    parser.add_argument("--out", type=Path, default=Path("runs/heldout"))
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()

    from tqdm import tqdm

    from lpm.bench.materialize import materialize
    from lpm.bench.runner import RunConfig, run_suite
    from lpm.bench.suites import load_suite
    from lpm.inference import shipped_bundle_path
    from lpm.media import write_mp4
    from lpm.models.audio import LogMelFeatures
    from lpm.models.vae import load_vae

    vae = load_vae(args.vae or shipped_bundle_path() / "vae").eval()
    mel = LogMelFeatures()
    suite = load_suite(SUITE)
    cases = suite.cases[: args.limit] if args.limit else suite.cases
    modes = ("clip", "frame")
    results = {}
    for mode in modes:
        system = f"{args.name}-{mode}"
        videos = args.out / "systems" / system / "videos"
        videos.mkdir(parents=True, exist_ok=True)
        for case in tqdm(cases, desc=f"{system}: reconstruct", unit="case"):
            path = videos / f"{case.id}.mp4"
            if path.is_file():
                continue
            inputs = materialize(case, suite.root, args.out / "cases" / case.id)
            if inputs.truth_frames is None:
                raise ValueError(f"case {case.id} of {SUITE} has no ground-truth video")
            speech = None
            if getattr(vae, "speech_dim", 0):
                wave = torch.from_numpy(np.asarray(inputs.speak, np.float32))[None]
                speech = mel(wave, len(inputs.truth_frames))[0]
            frames = reconstruct(vae, inputs.truth_frames, mode, speech)
            write_mp4(path, frames, int(round(case.fps)),
                      inputs.speak, inputs.sample_rate)  # fmt: skip
        run_suite(RunConfig(suite=SUITE, out=args.out, videos=videos, system=system,
                            limit=args.limit, progress=False))  # fmt: skip
        results[mode] = summarise(args.out, system)

    keys = ("truth_mouth_corr", "listen_mouth", "false_lip_rate", "id_similarity", "sync_corr")
    print(f"{'metric':<20}{'ground truth':>14}{'VAE (frame)':>14}{'VAE (clip)':>14}")
    for key in keys:
        vals = [results["clip"]["rows"][key]["truth"], results["frame"]["rows"][key]["model"],
                results["clip"]["rows"][key]["model"]]  # fmt: skip
        print(f"{key:<20}" + "".join(f"{'n/a' if v is None else f'{v:.3f}':>14}" for v in vals))
    out = {
        "vae": str(args.vae or "lpm-nano"),
        "cases": len(cases),
        "lip_sync_ceiling": {m: results[m]["lip_sync_ratio"] for m in modes},
        "identity_ceiling": {m: results[m]["identity_ratio"] for m in modes},
        "rows": {m: results[m]["rows"] for m in modes},
    }
    print(f"lip-sync ceiling (model/truth): clip {out['lip_sync_ceiling']['clip']:.3f}, "
          f"frame {out['lip_sync_ceiling']['frame']:.3f}")  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
