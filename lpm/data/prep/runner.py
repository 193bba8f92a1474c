"""Local runner: a process pool over source videos, resumable, with a funnel table.

Output directory:

    prep_config.json    the resolved config
    videos/<id>.json    one report per finished source (the resume marker): shot verdicts,
                        dropped clips and why, manifest entries, funnel counts, or the reason
                        the source was skipped
    clips/<name>/       clip directories in the Stage clip schema
    manifest.jsonl      one line per clip, rebuilt from the reports after every run
    funnel.json, funnel.md   clips and seconds each stage kept
    rebalanced.jsonl    the listener-rebalanced sampling list

A clip directory is written under a temporary name and renamed; a source's report is written
(atomically) only after all its clips are in place, and the manifest is rebuilt from reports,
so a rerun skips finished sources, redoes unfinished ones from scratch, and never duplicates or
loses a clip. A crash in one source is recorded in its report (`status: error`) and retried on
the next run; bad inputs are recorded as `skipped` with their reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from lpm.data.prep.config import ORDER, PrepConfig
from lpm.data.prep.media import list_inputs, source_id
from lpm.data.prep.pipeline import FUNNEL, process_video
from lpm.data.prep.rebalance import rebalance
from lpm.data.prep.write import TMP_PREFIX

log = logging.getLogger(__name__)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _clean_partial(out: Path, sid: str) -> None:
    """Remove clip directories a previous, unfinished run left for source `sid`."""
    root = out / "clips"
    if not root.is_dir():
        return
    for d in list(root.glob(f"{sid}-*")) + list(root.glob(f"{TMP_PREFIX}{sid}-*")):
        shutil.rmtree(d, ignore_errors=True)


def run_one(path: str, cfg_dict: dict, out: str) -> dict:
    """Process one source in a worker; never raises (errors become a report)."""
    cfg = PrepConfig.from_dict(cfg_dict)
    try:
        return process_video(Path(path), cfg, Path(out))
    except Exception as err:  # a bug or a broken file must not stop the other sources
        log.exception("prep failed on %s", path)
        return {
            "path": path,
            "status": "error",
            "reason": type(err).__name__,
            "detail": "".join(traceback.format_exception_only(err)).strip(),
            "entries": [],
            "funnel": {"input": [1, 0.0]},
            "shots": [],
        }


def _report_path(out: Path, path: Path) -> Path:
    return out / "videos" / f"{source_id(path)}.json"


def _finish(out: Path, path: Path, report: dict) -> None:
    if report.get("status") == "error":
        _atomic_write(out / "videos" / f".error-{source_id(path)}.json", json.dumps(report))
        return
    _atomic_write(_report_path(out, path), json.dumps(report))


def collect(out: Path) -> tuple[list[dict], list[dict]]:
    """(reports, manifest entries) of every finished source, sorted by clip directory."""
    reports = [json.loads(p.read_text()) for p in sorted((out / "videos").glob("*.json"))]
    entries = sorted((e for r in reports for e in r.get("entries", [])), key=lambda e: e["dir"])
    for i, e in enumerate(entries):
        e["index"] = i
    return reports, entries


def funnel_table(reports: list[dict]) -> dict[str, list[float]]:
    """stage -> [count, seconds] summed over sources."""
    total = {k: [0, 0.0] for k in FUNNEL}
    for r in reports:
        for k, (n, s) in r.get("funnel", {}).items():
            total[k][0] += n
            total[k][1] = round(total[k][1] + s, 3)
    return total


def funnel_markdown(funnel: dict[str, list[float]]) -> str:
    lines = ["| stage | kept (videos, shots, tracks or clips) | seconds |", "|---|---:|---:|"]
    lines += [f"| {k} | {int(n)} | {s:.1f} |" for k, (n, s) in funnel.items()]
    return "\n".join(lines) + "\n"


def finalize(out: Path, cfg: PrepConfig) -> dict:
    """Rebuild manifest, funnel and rebalanced list from the reports; returns a summary."""
    reports, entries = collect(out)
    _atomic_write(out / "manifest.jsonl", "".join(json.dumps(e) + "\n" for e in entries))
    funnel = funnel_table(reports)
    _atomic_write(out / "funnel.json", json.dumps(funnel, indent=1))
    _atomic_write(out / "funnel.md", funnel_markdown(funnel))
    picks = rebalance(entries, cfg.rebalance)
    _atomic_write(out / "rebalanced.jsonl", "".join(json.dumps(e) + "\n" for e in picks))
    skipped = [
        {"path": r["path"], "reason": r.get("reason")}
        for r in reports
        if r.get("status") == "skipped"
    ]
    errors = [json.loads(p.read_text()) for p in (out / "videos").glob(".error-*.json")]
    return {
        "clips": len(entries),
        "funnel": funnel,
        "skipped": skipped,
        "errors": [{"path": e["path"], "reason": e["reason"]} for e in errors],
    }


def prepare_out(out: Path, cfg: PrepConfig) -> None:
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "clips").mkdir(exist_ok=True)
    _atomic_write(out / "prep_config.json", json.dumps(cfg.to_dict(), indent=1))


def pending_inputs(input_path: str | Path, out: Path) -> list[Path]:
    """Sources without a finished report (their partial clips are removed)."""
    todo = []
    for p in list_inputs(input_path):
        if _report_path(out, p).exists():
            continue
        _clean_partial(out, source_id(p))
        (out / "videos" / f".error-{source_id(p)}.json").unlink(missing_ok=True)
        todo.append(p)
    return todo


def run_local(
    input_path: str | Path,
    out: str | Path,
    cfg: PrepConfig,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Process every source under `input_path` into `out` (resumable); returns a summary."""
    out = Path(out)
    list_inputs(input_path)  # a missing or empty input stops the run before it writes
    prepare_out(out, cfg)
    todo = pending_inputs(input_path, out)
    last = ORDER.index(cfg.until)
    bars = {
        s: tqdm(
            total=len(todo),
            desc=f"{s:>10}",
            disable=not progress,
            unit="video",
            position=k,
            leave=True,
        )
        for k, s in enumerate(ORDER[: last + 1])
    }
    try:
        if workers <= 1:
            for p in todo:
                report = run_one(str(p), cfg.to_dict(), str(out))
                _finish(out, p, report)
                _advance(bars, report)
        else:
            _run_pool(todo, cfg, out, workers, bars)
    finally:
        for b in bars.values():
            b.close()
    return finalize(out, cfg)


def _advance(bars: dict, report: dict) -> None:
    """Tick the bars of the stages this source went through."""
    reached = "load" if report.get("status") != "ok" else None
    for s, b in bars.items():
        b.update(1)
        if s == reached:
            break


def _run_pool(todo: list[Path], cfg: PrepConfig, out: Path, workers: int, bars: dict) -> None:
    remaining = list(todo)
    while remaining:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futs = {pool.submit(run_one, str(p), cfg.to_dict(), str(out)): p for p in remaining}
            remaining = []
            for fut, p in futs.items():
                try:
                    report = fut.result()
                except BrokenProcessPool:
                    # a worker died (killed, out of memory): record this source, retry the rest
                    report = {
                        "path": str(p),
                        "status": "error",
                        "reason": "worker_died",
                        "detail": "the worker process died",
                        "entries": [],
                        "funnel": {},
                        "shots": [],
                    }
                    remaining = [q for f, q in futs.items() if not f.done() or q is not p]
                    remaining = [
                        q for q in remaining if not _report_path(out, q).exists() and q is not p
                    ]
                    _finish(out, p, report)
                    _advance(bars, report)
                    break
                _finish(out, p, report)
                _advance(bars, report)
