"""`lpm bench report`: `metrics.json` and a self-contained `report.html` from a run directory.

The report has, per system: dimension scores (overall and per subset), every metric averaged per
subset, the Fréchet distance of visual features against the ground truth, identity similarity
over time for long cases, and for two systems A and B a side-by-side table plus automatic
Good/Same/Bad bars (per case and dimension: A better than B by more than `GSB_MARGIN` is Good).
Human Good/Same/Bad results (`lpm bench rate --export`) are drawn the same way when given.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from lpm.bench.metrics import DIMENSION_TITLES, DIMENSIONS, frechet_distance, visual_score
from lpm.bench.runner import TRUTH_SYSTEM, load_scores, truth_features
from lpm.bench.scoring import CaseScore

GSB_MARGIN = 0.02
"""Dimension-score difference under which an automatic pairwise judgement is Same."""
REPORT_METRICS = (
    "sync_corr",
    "sync_offset",
    "sync_confidence",
    "false_lip_rate",
    "switch_latency_s",
    "syncnet_offset",
    "syncnet_confidence",
    "syncnet_min_dist",
    "id_similarity",
    "id_drift_per_min",
    "motion_energy_ratio",
    "pixel_energy_ratio",
    "static_fraction",
    "jitter",
    "flicker",
    "text_accuracy",
    "action_accuracy",
    "expression_accuracy",
)
LONG_CASE_MIN_S = 6.0
"""Cases at least this long (seconds) get an identity-over-time plot."""


def _mean(vals) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def _fd(scores: list[CaseScore], truth: dict[str, np.ndarray]) -> float | None:
    gen = [s.features for s in scores if s.features is not None and s.case_id in truth]
    ref = [truth[s.case_id] for s in scores if s.features is not None and s.case_id in truth]
    if not gen or sum(len(g) for g in gen) < 3:
        return None
    return frechet_distance(np.concatenate(gen), np.concatenate(ref))


def _group(scores: list[CaseScore], truth) -> dict:
    dims = {d: _mean(s.dims.get(d) for s in scores) for d in DIMENSIONS if d != "visual"}
    fd = _fd(scores, truth)
    dims["visual"] = visual_score(fd)
    return {
        "cases": len(scores),
        "dims": dims,
        "frechet_distance": fd,
        "metrics": {m: _mean(s.metrics.get(m) for s in scores) for m in REPORT_METRICS},
    }


def gsb(a: list[CaseScore], b: list[CaseScore], margin: float = GSB_MARGIN) -> dict:
    """Automatic Good/Same/Bad of system A against B per dimension (fractions of cases)."""
    bmap = {s.case_id: s for s in b}
    out = {}
    for d in DIMENSIONS:
        if d == "visual":
            continue
        votes = []
        for s in a:
            o = bmap.get(s.case_id)
            if o is None or s.dims.get(d) is None or o.dims.get(d) is None:
                continue
            diff = s.dims[d] - o.dims[d]
            votes.append("good" if diff > margin else "bad" if diff < -margin else "same")
        if votes:
            out[d] = {k: votes.count(k) / len(votes) for k in ("good", "same", "bad")}
            out[d]["n"] = len(votes)
    return out


def aggregate(out: Path) -> dict:
    """The content of `metrics.json` for a run directory."""
    run = (
        json.loads((Path(out) / "run.json").read_text())
        if (Path(out) / "run.json").is_file()
        else {}
    )
    scores = load_scores(out)
    truth = truth_features(out)
    systems = {}
    for name, ss in scores.items():
        subsets = sorted({s.subset for s in ss})
        systems[name] = {
            "overall": _group(ss, truth),
            "subsets": {sub: _group([s for s in ss if s.subset == sub], truth) for sub in subsets},
            "cases": {
                s.case_id: {
                    "subset": s.subset,
                    "duration_s": s.duration_s,
                    "dims": s.dims,
                    "metrics": s.metrics,
                    "id_per_second": s.id_per_second,
                    "instructions": s.instructions,
                }
                for s in ss
            },
        }
    names = [n for n in scores if n != TRUTH_SYSTEM]
    comparisons = [
        {"a": x, "b": y, "gsb": gsb(scores[x], scores[y])}
        for i, x in enumerate(names)
        for y in names[i + 1 :]
    ]
    comparisons += [
        {"a": x, "b": TRUTH_SYSTEM, "gsb": gsb(scores[x], scores[TRUTH_SYSTEM])}
        for x in names
        if TRUTH_SYSTEM in scores
    ]
    return {
        "format": "lpm-bench-metrics/1",
        "suite": run.get("suite", ""),
        "backend": run.get("backend", ""),
        "git_revision": run.get("git_revision", ""),
        "systems": systems,
        "comparisons": comparisons,
    }


# --- plots --------------------------------------------------------------------------------------


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plot_dimensions(metrics: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics["systems"])
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        vals = [metrics["systems"][n]["overall"]["dims"].get(d) for d in DIMENSIONS]
        xs = np.arange(len(DIMENSIONS)) + i * width - 0.4 + width / 2
        ax.bar(xs, [v if v is not None else 0 for v in vals], width, label=n)
    ax.set_xticks(
        np.arange(len(DIMENSIONS)),
        [DIMENSION_TITLES[d].replace(" ", "\n", 1) for d in DIMENSIONS],
        fontsize=8,
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (0-1)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_gsb(rows: list[tuple[str, dict]], title: str) -> str:
    """Stacked horizontal Good/Same/Bad bars (one row per label), like the paper's figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 0.9))
    colours = {"good": "#4caf50", "same": "#bdbdbd", "bad": "#e57373"}
    for i, (_, g) in enumerate(rows):
        left = 0.0
        for k in ("good", "same", "bad"):
            v = g.get(k, 0.0)
            ax.barh(i, v, left=left, color=colours[k], label=k.capitalize() if i == 0 else None)
            if v >= 0.08:
                ax.text(left + v / 2, i, f"{100 * v:.0f}%", ha="center", va="center", fontsize=7)
            left += v
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(title, fontsize=9, loc="left")
    ax.legend(fontsize=7, ncols=3, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def plot_identity_over_time(metrics: dict, case_id: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 2.3))
    for n, sysm in metrics["systems"].items():
        series = sysm["cases"].get(case_id, {}).get("id_per_second") or []
        if series:
            ax.plot(np.arange(len(series)) + 0.5, series, marker=".", label=n)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("identity similarity")
    ax.set_title(f"{case_id}: identity similarity to the references over time", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:8px 0 18px;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}h2{margin-top:28px;border-bottom:1px solid #ddd}
.muted{color:#888;font-size:12px}"""


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _table(header: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = []
    for r in rows:
        body.append("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def _dims_table(metrics: dict, key: str = "overall", subset: str | None = None) -> str:
    rows = []
    for n, s in metrics["systems"].items():
        g = s["overall"] if subset is None else s["subsets"].get(subset)
        if g is None:
            continue
        rows.append([n, g["cases"], *[g["dims"].get(d) for d in DIMENSIONS]])
    return _table(["system", "cases", *[DIMENSION_TITLES[d] for d in DIMENSIONS]], rows)


def _compare_table(metrics: dict, a: str, b: str) -> str:
    sa, sb = metrics["systems"][a]["overall"], metrics["systems"][b]["overall"]
    rows = [
        [DIMENSION_TITLES[d] + " (score)", sa["dims"].get(d), sb["dims"].get(d)] for d in DIMENSIONS
    ]
    rows += [[m, sa["metrics"].get(m), sb["metrics"].get(m)] for m in REPORT_METRICS]
    rows.append(["frechet_distance", sa["frechet_distance"], sb["frechet_distance"]])
    for r in rows:
        r.append(None if r[1] is None or r[2] is None else r[1] - r[2])
    return _table(["", a, b, "A - B"], rows)


def render_html(metrics: dict, human: dict | None = None) -> str:
    """The report page (plots embedded as PNG, no external resources)."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>LPM-Bench report"
        f"</title><style>{_CSS}</style></head><body>",
        f"<h1>LPM-Bench: {html.escape(metrics['suite'])}</h1>",
        f"<p class='muted'>backend {html.escape(metrics['backend'])} · revision "
        f"{html.escape(metrics['git_revision'][:12])} · scores in [0, 1], higher is "
        "better; Visual Quality = 1 / (1 + FD / 20)</p>",
        "<h2>Dimensions</h2>",
        _dims_table(metrics),
        f"<img alt='dimension scores' src='data:image/png;base64,{plot_dimensions(metrics)}'>",
    ]
    rows = []
    for c in metrics["comparisons"]:
        for d, g in c["gsb"].items():
            rows.append((f"{c['a']} vs {c['b']}: {DIMENSION_TITLES[d]}", g))
    if rows:
        parts += [
            "<h2>Automatic Good / Same / Bad</h2>",
            f"<img alt='GSB' src='data:image/png;base64,"
            f"{plot_gsb(rows, 'per-case dimension score, A vs B')}'>",
        ]
    if human:
        hrows = [
            (f"{p['a']} vs {p['b']}: {d}", g)
            for p in human.get("pairs", [])
            for d, g in p["gsb"].items()
        ]
        if hrows:
            parts += [
                "<h2>Human Good / Same / Bad</h2>",
                f"<img alt='human GSB' src='data:image/png;base64,"
                f"{plot_gsb(hrows, 'majority of 3 raters')}'>",
            ]
    names = [n for n in metrics["systems"] if n != TRUTH_SYSTEM]
    if len(names) >= 2 or (names and TRUTH_SYSTEM in metrics["systems"]):
        b = names[1] if len(names) >= 2 else TRUTH_SYSTEM
        parts += [
            f"<h2>Side by side: {html.escape(names[0])} (A) vs {html.escape(b)} (B)</h2>",
            _compare_table(metrics, names[0], b),
        ]
    subsets = sorted({s for v in metrics["systems"].values() for s in v["subsets"]})
    parts.append("<h2>Per subset</h2>")
    for sub in subsets:
        parts += [f"<h3>{html.escape(sub)}</h3>", _dims_table(metrics, subset=sub)]
    parts.append("<h2>Metrics (mean over cases)</h2>")
    systems = metrics["systems"]
    parts.append(
        _table(
            ["metric", *systems],
            [
                [m, *[s["overall"]["metrics"].get(m) for s in systems.values()]]
                for m in REPORT_METRICS
            ]
            + [["frechet_distance", *[s["overall"]["frechet_distance"] for s in systems.values()]]],
        )
    )
    long_cases = sorted(
        {
            cid
            for s in metrics["systems"].values()
            for cid, c in s["cases"].items()
            if c["duration_s"] >= LONG_CASE_MIN_S
        }
    )
    if long_cases:
        parts.append("<h2>Long cases: identity over time</h2>")
        for cid in long_cases[:6]:
            parts.append(
                f"<img alt='identity over time' src='data:image/png;base64,"
                f"{plot_identity_over_time(metrics, cid)}'>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: Path, human: dict | None = None) -> tuple[Path, Path]:
    """Write `OUT/metrics.json` and `OUT/report.html`; returns both paths."""
    out = Path(out)
    metrics = aggregate(out)
    if human:
        metrics["human"] = human
    mpath = out / "metrics.json"
    mpath.write_text(json.dumps(metrics, indent=1) + "\n")
    hpath = out / "report.html"
    hpath.write_text(render_html(metrics, human))
    return hpath, mpath
