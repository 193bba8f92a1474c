"""Running the app under uvicorn: in the foreground (`lpm serve`) or in a background thread."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from lpm.serve.app import create_app
from lpm.serve.config import ServeConfig
from lpm.serve.loading import ServedModel

log = logging.getLogger(__name__)


def _uvicorn_config(model: ServedModel, config: ServeConfig) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(model, config),
        host=config.host,
        port=config.port,
        ws_max_size=4 * config.max_message_bytes,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


def serve_forever(model: ServedModel, config: ServeConfig) -> None:
    """Serve until interrupted (Ctrl-C)."""
    uvicorn.Server(_uvicorn_config(model, config)).run()


class BackgroundServer:
    """The server in a daemon thread, for tests and benchmarks; ``port`` is the bound port."""

    def __init__(self, model: ServedModel, config: ServeConfig) -> None:
        self.server = uvicorn.Server(_uvicorn_config(model, config))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="lpm-serve")
        self.port = 0

    @property
    def app(self):
        return self.server.config.app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the lpm server did not start")
            time.sleep(0.02)
        sock = self.server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
