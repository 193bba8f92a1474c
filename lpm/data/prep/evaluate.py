"""Scoring a prep run on Stage raw scenes against their ground truth (`truth.json`).

Reports: shot-boundary recall/precision within a tolerance (frames), the verdict of every
shot the truth drops (is it dropped, and for the right reason), the reasons clean shots (the
truth keeps them) were dropped for, frame-level
speak/listen/idle accuracy of the written clips against the truth state of the person each
clip shows (matched by face box), and where the wrong frames lie (`label_errors`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lpm.data.prep.media import list_inputs, source_id
from lpm.data.prep.track import iou
from lpm.data.stage.schema import STATES

TRUTH_TO_REASON = {
    "too_short": "too_short",
    "empty": "no_person",
    "subtitles": "subtitles",
    "logo": "logo",
    "blur": "blur",
    "pip": "pip",
}
"""Stage's drop verdicts and the pipeline reason that matches each."""


EDGE_FRAMES = 6
"""Wrong frames this close (frames, 0.25 s at 24 fps) to a change of the true state are
timing errors of that change; farther ones are interior errors."""


def label_errors(truth: list[str], ours: list[str], edge: int = EDGE_FRAMES) -> dict[str, int]:
    """Count the wrong frames of one clip by kind.

    - `missed <state> run`: a true run of at most `2 * edge` frames with no frame right (a
      short pause or backchannel the labels do not resolve);
    - `<a>-><b> early|late`: within `edge` frames of a true change from state a to b, the
      labels change before (early) or after (late) the truth;
    - `interior <true>-><ours>`: farther from any true change.
    """
    t = np.asarray([STATES.index(x) for x in truth])
    o = np.asarray([STATES.index(x) if x in STATES else -1 for x in ours])
    out: dict[str, int] = {}
    if len(t) == 0:
        return out
    starts = np.r_[0, np.nonzero(np.diff(t))[0] + 1]
    ends = np.r_[starts[1:], len(t)]
    changes = starts[1:]
    for a, b in zip(starts, ends, strict=True):
        wrong = np.nonzero(o[a:b] != t[a:b])[0] + a
        if len(wrong) == 0:
            continue
        if b - a <= 2 * edge and len(wrong) == b - a and a > 0 and b < len(t):
            key = f"missed {STATES[t[a]]} run"
            out[key] = out.get(key, 0) + len(wrong)
            continue
        for i in wrong:
            j = changes[np.argmin(np.abs(changes - i))] if len(changes) else -(10**9)
            if i >= j and i - j < edge:
                key = f"{STATES[t[j - 1]]}->{STATES[t[j]]} late"
            elif i < j and j - i <= edge:
                key = f"{STATES[t[j - 1]]}->{STATES[t[j]]} early"
            else:
                key = f"interior {STATES[t[i]]}->{ours[i]}"
            out[key] = out.get(key, 0) + 1
    return out


def _boundaries(shots: list[dict]) -> list[int]:
    return [s["start_frame"] for s in shots[1:]]


def score_scene(truth: dict, report: dict, clips_root: Path, tol: int = 2) -> dict:
    """Scores of one scene (see module docstring)."""
    tb, pb = _boundaries(truth["shots"]), _boundaries(report["shots"])
    found = [b for b in tb if any(abs(b - p) <= tol for p in pb)]
    true_pos = [p for p in pb if any(abs(b - p) <= tol for b in tb)]
    verdicts, clean = [], []
    for s in truth["shots"]:
        a, b = s["start_frame"], s["end_frame"]
        overlap = [
            (min(b, o["end_frame"]) - max(a, o["start_frame"]), o["verdict"])
            for o in report["shots"]
        ]
        ours = max(overlap)[1] if overlap else "missing"
        if s["verdict"] == "keep":
            clean.append(ours)
            continue
        want = TRUTH_TO_REASON[s["verdict"]]
        verdicts.append(
            {
                "truth": s["verdict"],
                "ours": ours,
                "dropped": ours != "keep",
                "right_reason": ours == want,
            }
        )
    right = wrong = 0
    per_state = {k: [0, 0] for k in STATES}
    errors: dict[str, int] = {}
    for e in report.get("entries", []):
        d = clips_root / Path(e["dir"]).name
        meta = json.loads((d / "meta.json").read_text())
        states = json.loads((d / "labels.json").read_text())["fields"]["state"]
        src = meta["source"]
        a = src["start_frame"]
        box = np.asarray(src["face_box_median"])
        mid = a + len(states) // 2
        person = max(
            (0, 1),
            key=lambda p: iou(box, np.asarray(truth["people"][p]["face_box"][mid] or [0, 0, 0, 0])),
        )
        gt = truth["people"][person]["state"][a : a + len(states)]
        for k, v in label_errors(gt, states[: len(gt)]).items():
            errors[k] = errors.get(k, 0) + v
        for ours, want in zip(states, gt, strict=False):
            ok = ours == want
            right += ok
            wrong += not ok
            per_state[want][0] += ok
            per_state[want][1] += 1
    return {
        "boundaries": len(tb),
        "boundaries_found": len(found),
        "cuts": len(pb),
        "cuts_true": len(true_pos),
        "drops": verdicts,
        "clean": clean,
        "frames": right + wrong,
        "frames_right": right,
        "per_state": per_state,
        "label_errors": errors,
        "clips": len(report.get("entries", [])),
    }


def score_run(input_path: str | Path, out: str | Path, tol: int = 2) -> dict:
    """Aggregate scores of a prep run over Stage raw scenes (each with its `truth.json`)."""
    out = Path(out)
    scenes = []
    for video in list_inputs(input_path):
        truth = json.loads((video.parent / "truth.json").read_text())
        report = json.loads((out / "videos" / f"{source_id(video)}.json").read_text())
        scenes.append(score_scene(truth, report, out / "clips", tol))
    drops = [d for s in scenes for d in s["drops"]]
    frames = sum(s["frames"] for s in scenes)
    per_state = {
        k: round(
            sum(s["per_state"][k][0] for s in scenes)
            / max(1, sum(s["per_state"][k][1] for s in scenes)),
            4,
        )
        for k in STATES
    }
    errors: dict[str, int] = {}
    for s in scenes:
        for k, v in s["label_errors"].items():
            errors[k] = errors.get(k, 0) + v
    by_kind: dict[str, list[int]] = {}
    for d in drops:
        by_kind.setdefault(d["truth"], [0, 0])
        by_kind[d["truth"]][0] += d["right_reason"]
        by_kind[d["truth"]][1] += 1
    clean = [v for s in scenes for v in s["clean"]]
    clean_dropped: dict[str, int] = {}
    for v in clean:
        if v != "keep":
            clean_dropped[v] = clean_dropped.get(v, 0) + 1
    return {
        "scenes": len(scenes),
        "boundary_recall": round(
            sum(s["boundaries_found"] for s in scenes)
            / max(1, sum(s["boundaries"] for s in scenes)),
            4,
        ),
        "boundary_precision": round(
            sum(s["cuts_true"] for s in scenes) / max(1, sum(s["cuts"] for s in scenes)), 4
        ),
        "drops": len(drops),
        "drops_rejected": sum(d["dropped"] for d in drops),
        "drops_right_reason": sum(d["right_reason"] for d in drops),
        "drops_by_kind": by_kind,
        "clean_shots": len(clean),
        "clean_dropped": dict(sorted(clean_dropped.items(), key=lambda kv: (-kv[1], kv[0]))),
        "frames": frames,
        "label_accuracy": round(sum(s["frames_right"] for s in scenes) / max(1, frames), 4),
        "label_accuracy_by_state": per_state,
        "label_errors": dict(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))),
        "clips": sum(s["clips"] for s in scenes),
        "wrong_reasons": [d for d in drops if not d["right_reason"]],
    }
