"""What lip-sync any model can reach on the Stage held-out cases, and what hearing the speech gives.

The held-out lip-sync score (`truth_mouth_corr`) is the correlation, while the character speaks,
of the probe's mouth reading with the labelled mouth curve. In the Stage world that curve is
the speech envelope's opening (`lpm.data.stage.performance.speech_opening`), times a small
random articulation gain, moved earlier by the character's lip lead. Since 2026-12-04 every
character leads by one frame (`lpm.data.stage.character.LIP_LEAD_FRAMES`); before, each drew
0-2 frames that nothing a model is given reveals (docs/stage.md, "Lip lead"). This script
scores mouth curves read from the speech alone against the labels, with the same mask and
correlation:

- ``ground truth``: the probe reading the ground-truth video (the denominator of the target);
- ``envelope, lead known``: the envelope's opening moved by the character's own lead;
- ``envelope, lead unknown``: the mean of the opening moved by 0, 1 and 2 frames (the best
  guess when the lead is unknown, as it was in the world before 2026-12-04);
- ``envelope, lead 1``: the opening moved by one frame;
- ``decoder's speech head``: the mouth the shipped VAE decoder's speech head hears, if it has one.

A curve is not a video: a generated video's mouth is read by the probe, which loses a little
more (the ground truth scores below 1 for that reason), so ``lead unknown`` / ``ground truth``
bounds the lip-sync ratio any model without the lead can reach from above, and ``lead known``
/ ``ground truth`` the ratio of one that knows it (today's world).

    python benchmarks/lip_sync_bound.py [--out runs/heldout] [--model BUNDLE] [--limit N]

The cases are materialised under ``--out`` as `benchmarks/nano_quality.py` does (reused when
there). The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

LEADS = (0, 1, 2)
"""Lip leads (frames) a Stage character could draw before 2026-12-04 (`lpm.data.stage`)."""
SPEAKING_SUBSETS = ("speaking", "conversation", "diverse-motion")
"""The subsets whose lip-sync `benchmarks/nano_quality.py` averages."""


def _lead(curve: np.ndarray, frames: int) -> np.ndarray:
    """``curve`` moved ``frames`` earlier, its last value held (as `perform` does)."""
    if frames == 0:
        return curve
    return np.concatenate([curve[frames:], np.repeat(curve[-1:], frames)])


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.std() < 1e-8 or b.std() < 1e-8:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _head_curve(vae, speak: np.ndarray, n: int) -> np.ndarray | None:
    """The decoder speech head's mouth opening for ``n`` frames of ``speak`` (None: no head)."""
    import torch

    from lpm.models.audio import LogMelFeatures

    decoder = getattr(vae, "decoder", None)
    if decoder is None or not getattr(decoder.config, "speech_mouth", 0):
        return None
    with torch.no_grad():
        feats = LogMelFeatures()(torch.from_numpy(speak)[None], n)[:, :n]
        heard = decoder.speech_mouth(vae.speech_window(feats, n), n)
    return heard[0, :, 0].numpy()


def case_rows(inputs, probes, vae) -> dict[str, float | None]:
    """Each curve's correlation with the labels while the character speaks (one case)."""
    from lpm.data.stage.character import make_character
    from lpm.data.stage.performance import audio_features, speech_opening

    labels = inputs.truth_labels.get("fields", inputs.truth_labels)
    truth = np.asarray(labels["mouth_open"], np.float64)
    n = len(truth)
    speak = np.asarray(labels["state"][:n]) == "speak"
    if speak.sum() < inputs.case.fps * 0.5:  # as `truth_mouth_metrics`
        return {}
    db = audio_features(inputs.speak, inputs.sample_rate, inputs.case.fps, n)["db"]
    opening = speech_opening(db)
    lead = make_character(inputs.case.stage.performer_seed).lip_lead_frames
    read = probes.read_frames(inputs.truth_frames[:n]).mouth_open
    rows = {
        "ground truth": _corr(read[speak], truth[speak]),
        "envelope, lead known": _corr(_lead(opening, lead)[speak], truth[speak]),
        "envelope, lead unknown": _corr(
            np.mean([_lead(opening, k) for k in LEADS], 0)[speak], truth[speak]
        ),
        "envelope, lead 1": _corr(_lead(opening, 1)[speak], truth[speak]),
    }
    head = _head_curve(vae, inputs.speak, n)
    if head is not None:
        rows["decoder's speech head"] = _corr(head[speak], truth[speak])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/heldout"))
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    from lpm.bench.materialize import materialize
    from lpm.bench.probes.probes import load_probes
    from lpm.bench.suites import stage_heldout
    from lpm.inference import shipped_bundle_path
    from lpm.models.vae import load_vae

    suite = stage_heldout()
    cases = suite.cases[: args.limit] if args.limit else suite.cases
    probes = load_probes()
    vae = load_vae(Path(args.model or shipped_bundle_path()) / "vae").eval()
    per_case = {}
    for case in cases:
        if case.subset not in SPEAKING_SUBSETS:
            continue
        rows = case_rows(materialize(case, suite.root, args.out / "cases" / case.id), probes, vae)
        if rows:
            per_case[case.id] = rows
    names = list(next(iter(per_case.values())))
    mean = {k: float(np.mean([r[k] for r in per_case.values() if r.get(k) is not None]))
            for k in names}  # fmt: skip
    truth = mean["ground truth"]
    print(f"{len(per_case)} speaking cases of {suite.name}; correlation with the labelled mouth")
    print(f"{'curve':28s} {'corr':>7s} {'/ truth':>8s}")
    for k in names:
        print(f"{k:28s} {mean[k]:7.3f} {mean[k] / truth:8.3f}")
    result = {
        "suite": suite.name,
        "cases": len(per_case),
        "mean": mean,
        "ratio_to_truth": {k: mean[k] / truth for k in names},
        "per_case": per_case,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
