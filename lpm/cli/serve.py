"""`lpm serve`: real-time character sessions over HTTP + WebSocket (see docs/serve.md)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import typer

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


LOG_LEVELS = ("debug", "info", "warning", "error")


def _setup_logging(level: str) -> None:
    if level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(
            f"{level!r}: use one of {', '.join(LOG_LEVELS)}", param_hint="--log-level"
        )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if root.level > logging.DEBUG:  # aioice logs every ICE candidate pair check at INFO
        logging.getLogger("aioice").setLevel(max(root.level, logging.WARNING))


def serve(
    model: Path = typer.Option(
        None, help="Online bundle directory; default: the shipped lpm-nano-online."
    ),
    random_weights: bool = typer.Option(
        False, "--random-weights", help="Demo/dev: lpm-nano-online architecture, random weights."
    ),
    size: int = typer.Option(64, help="Frame side in pixels for --random-weights."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8000, help="TCP port."),
    max_sessions: int = typer.Option(4, help="Sessions at once; more get HTTP 503 busy."),
    token: str = typer.Option(
        None, envvar="LPM_SERVE_TOKEN", help="Bearer token for the HTTP API (or LPM_SERVE_TOKEN)."
    ),
    lookahead: int = typer.Option(1, help="Chunks generation may queue ahead of playback."),
    compute_slots: int = typer.Option(2, help="Chunks computed at once across sessions."),
    max_session_s: float = typer.Option(3600.0, help="Longest session (seconds)."),
    max_message_bytes: int = typer.Option(65536, help="Largest WebSocket message (bytes)."),
    webrtc_host_address: list[str] = typer.Option(
        ["127.0.0.1"],
        help="Address WebRTC ICE host candidates are gathered on; repeat for several, 'all' for "
        "every non-loopback interface. No STUN/TURN server is used.",
    ),
    device: str = typer.Option(
        "auto", help="Torch device: auto (a GPU when there is one), cpu, cuda or cuda:N."
    ),
    dtype: str = typer.Option(
        "auto", help="Transformer precision: auto (bf16 on a GPU, fp32 on the CPU), fp32, bf16."
    ),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
) -> None:
    """Serve real-time, full-duplex character sessions and the browser client at http://HOST:PORT/."""
    from lpm.serve.config import ServeConfig
    from lpm.serve.loading import load_served_model
    from lpm.serve.server import serve_forever

    _setup_logging(log_level)
    log = logging.getLogger("lpm.serve")
    try:
        config = ServeConfig(
            host=host,
            port=port,
            max_sessions=max_sessions,
            token=token or None,
            lookahead=lookahead,
            compute_slots=compute_slots,
            max_session_s=max_session_s,
            max_message_bytes=max_message_bytes,
            webrtc_host_addresses=() if "all" in webrtc_host_address else (*webrtc_host_address,),
        )
        served = load_served_model(
            model, random_weights=random_weights, size=size, device=device, dtype=dtype
        )
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    remote = host not in ("127.0.0.1", "localhost", "::1")
    if remote and config.token is None:
        log.warning("binding %s without --token: anyone who can reach it can start sessions", host)
    if remote and config.webrtc_host_addresses == ("127.0.0.1",):
        log.warning("WebRTC gathers on 127.0.0.1 only: set --webrtc-host-address for remote peers")
    weight = next(served.bundle.transformer.parameters())
    log.info(
        "serving",
        extra={"model": served.name, "url": f"http://{host}:{port}/", "pid": os.getpid(),
               "device": str(weight.device), "dtype": str(weight.dtype).removeprefix("torch.")},
    )  # fmt: skip
    serve_forever(served, config)
