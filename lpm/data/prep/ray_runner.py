"""Ray Data runner: the same per-video operator chain, mapped over a cluster.

Each source is one row of a Ray Dataset; `map` runs `pipeline.process_video` (all operators)
on it in a Ray worker, and the driver writes each returned report exactly as the local runner
does, so both runners produce the same output directory and share resumability (finished
sources are skipped, unfinished ones are redone). Install with the `[ray]` extra. With no
`address`, a local Ray instance is started on 127.0.0.1 with the dashboard and usage
statistics off.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lpm.data.prep.config import PrepConfig
from lpm.data.prep.media import list_inputs
from lpm.data.prep.runner import _finish, finalize, pending_inputs, prepare_out, run_one


def _process_row(row: dict, cfg: dict, out: str) -> dict:
    return {"path": row["path"], "report": json.dumps(run_one(row["path"], cfg, out))}


def run_ray(
    input_path: str | Path,
    out: str | Path,
    cfg: PrepConfig,
    num_cpus: int | None = None,
    address: str | None = None,
) -> dict:
    """Process every pending source with Ray Data; returns the same summary as `run_local`."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    try:
        import ray
    except ImportError as err:
        raise ImportError("the Ray runner needs ray: pip install 'lpm[ray]'") from err
    out = Path(out)
    list_inputs(input_path)  # a missing or empty input stops the run before it writes
    prepare_out(out, cfg)
    todo = pending_inputs(input_path, out)
    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        if address is None:
            kwargs.update(num_cpus=num_cpus, _node_ip_address="127.0.0.1")
        ray.init(address=address, **kwargs)
        started = True
    try:
        if todo:
            ds = ray.data.from_items([{"path": str(p)} for p in todo])
            ds = ds.map(_process_row, fn_kwargs={"cfg": cfg.to_dict(), "out": str(out)})
            for row in ds.iter_rows():
                _finish(out, Path(row["path"]), json.loads(row["report"]))
    finally:
        if started:
            ray.shutdown()
    return finalize(out, cfg)
