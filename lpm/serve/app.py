"""The FastAPI application: HTTP session API, the session WebSocket, health, metrics, client page.

`create_app` wires a loaded model and a `ServeConfig` into routes; all behaviour lives in
`session.py` (sessions), `transport.py` (WebSocket), `webrtc.py` (WebRTC) and `engine.py`
(generation).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import importlib.util
import logging
import time
from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Literal

import cv2
import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from lpm.inference import ReferenceImage
from lpm.serve.audio import opus_available
from lpm.serve.characters import character_image, character_png, demo_characters, find_character
from lpm.serve.config import ServeConfig
from lpm.serve.loading import ServedModel
from lpm.serve.metrics import ServeMetrics
from lpm.serve.protocol import PROTOCOL_VERSION
from lpm.serve.session import Busy, SessionManager, SessionSpec
from lpm.serve.transport import WebSocketTransport, close_reason

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
MAX_REFERENCES = 12
MAX_SDP_CHARS = 65536


class ReferenceIn(BaseModel):
    kind: str = Field(pattern="^(global|body|expression)$")
    subtype: int = Field(0, ge=0, le=7)
    image: str = Field(description="Base64 PNG or JPEG.")


class SessionRequest(BaseModel):
    """Create a session: a character (a demo id or your own image), a persona, a model."""

    character: str | None = Field(None, description="Demo character id from /v1/characters.")
    image: str | None = Field(None, description="Base64 PNG/JPEG character image (instead).")
    references: list[ReferenceIn] = Field(default_factory=list, max_length=MAX_REFERENCES)
    persona: str = Field("", description="Text persona / initial prompt.")
    model: str | None = Field(None, description="Must name the served model when given.")
    demo_agent: bool = Field(False, description="Answer user turns with the built-in agent.")


class SessionCreated(BaseModel):
    id: str
    key: str = Field(description="Authorises the WebSocket (?key=...).")
    websocket: str = Field(description="Path of the session WebSocket, key included.")
    protocol: int
    model: str
    random_weights: bool
    fps: int
    width: int
    height: int
    chunk_seconds: float
    sample_rate: int


class SessionStatus(BaseModel):
    id: str
    attached: bool
    age_s: float
    chunks: int
    late_chunks: int
    agent_queued_s: float


class WebRTCOffer(BaseModel):
    """A complete SDP offer: ICE gathering finished, every candidate inside (no trickle ICE)."""

    sdp: str = Field(max_length=MAX_SDP_CHARS)
    type: Literal["offer"] = "offer"


class WebRTCAnswer(BaseModel):
    sdp: str
    type: Literal["answer"] = "answer"
    video_codec: str = Field(description="Negotiated video codec: h264 or vp8.")
    audio_codec: str | None = Field(description="Negotiated audio codec; None without audio.")


def webrtc_available() -> bool:
    """Whether aiortc (extra ``lpm[webrtc]``) is installed."""
    return importlib.util.find_spec("aiortc") is not None


def _decode_image(b64: str, what: str) -> np.ndarray:
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, f"{what}: not valid base64") from None
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) if raw else None
    if bgr is None:
        raise HTTPException(400, f"{what}: not a decodable PNG or JPEG image")
    if max(bgr.shape[:2]) > MAX_IMAGE_SIDE or min(bgr.shape[:2]) < 16:
        raise HTTPException(400, f"{what}: sides must be 16..{MAX_IMAGE_SIDE} pixels")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _session_spec(req: SessionRequest, model: ServedModel, cfg: ServeConfig) -> SessionSpec:
    if req.model not in (None, "", "default", model.name, model.bundle.spec.name):
        raise HTTPException(
            400, f"model {req.model!r} is not served here; this server runs {model.name!r}"
        )
    if len(req.persona) > cfg.max_text_chars:
        raise HTTPException(400, f"persona is longer than {cfg.max_text_chars} characters")
    demo = find_character(req.character) if req.character else None
    if req.character and demo is None:
        raise HTTPException(404, f"unknown character {req.character!r}; see /v1/characters")
    if req.image:
        image = _decode_image(req.image, "image")
    elif demo is not None:
        image = character_image(demo.seed, max(model.bundle.spec.height, model.bundle.spec.width))
    else:
        raise HTTPException(400, "give a character id or an image")
    refs = [
        ReferenceImage(
            kind=r.kind, subtype=r.subtype, image=_decode_image(r.image, f"references[{i}]")
        )
        for i, r in enumerate(req.references)
    ]
    persona = req.persona or (demo.description if demo else "")
    voice = None
    if req.demo_agent:  # an uploaded image speaks with the first demo character's voice
        voice = (demo or demo_characters()[0]).character
    return SessionSpec(image, refs, persona, req.character, voice)


def _client_page() -> str:
    return resources.files("lpm.serve").joinpath("static/index.html").read_text()


def create_app(model: ServedModel, config: ServeConfig) -> FastAPI:
    """The server for one loaded online model."""
    metrics = ServeMetrics()
    manager = SessionManager(model, config, metrics)
    peers: set[asyncio.Task] = set()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        async def reaper() -> None:
            while True:
                await asyncio.sleep(1.0)
                manager.reap()

        task = asyncio.create_task(reaper())
        yield
        task.cancel()
        manager.close_all()
        if peers:  # WebRTC transports run outside any request: let them close their peers
            await asyncio.wait(peers, timeout=20.0)

    app = FastAPI(
        title="lpm serve",
        version=f"protocol {PROTOCOL_VERSION}",
        description="Real-time LPM character sessions. The WebSocket protocol is in docs/serve.md.",
        lifespan=lifespan,
    )
    app.state.manager, app.state.metrics = manager, metrics

    def start_peer(run: Coroutine) -> None:
        async def guarded() -> None:
            try:
                await run
            except Exception:
                log.exception("webrtc transport failed")

        task = asyncio.create_task(guarded())
        peers.add(task)
        task.add_done_callback(peers.discard)

    app.state.peers, app.state.start_peer = peers, start_peer

    def authorised(authorization: str | None = Header(None)) -> None:
        if config.token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), config.token.encode()):
            raise HTTPException(
                401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"body larger than {MAX_BODY_BYTES} bytes"}, 413)
        return await call_next(request)

    _info_routes(app, model, config, authorised)
    _session_routes(app, model, config, authorised)
    _webrtc_routes(app, authorised)
    return app


def _info_routes(
    app: FastAPI, model: ServedModel, config: ServeConfig, authorised: Callable
) -> None:
    """Client page, health, metrics, server info, demo characters."""
    manager: SessionManager = app.state.manager
    metrics: ServeMetrics = app.state.metrics

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return _client_page()

    @app.get("/healthz")
    def healthz() -> dict:
        return {
            "status": "ok",
            "sessions": len(manager.sessions),
            "max_sessions": config.max_sessions,
            "model": model.name,
            "random_weights": model.random_weights,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/info", dependencies=[Depends(authorised)])
    def info() -> dict:
        spec = model.bundle.spec
        return {
            "protocol": PROTOCOL_VERSION,
            "model": model.name,
            "random_weights": model.random_weights,
            "width": spec.width,
            "height": spec.height,
            "sample_rate": spec.sample_rate,
            "codecs": ["pcm16", "opus"] if opus_available() else ["pcm16"],
            "transports": ["websocket", "webrtc"] if webrtc_available() else ["websocket"],
            "auth": config.token is not None,
            "max_sessions": config.max_sessions,
            "max_message_bytes": config.max_message_bytes,
            "max_session_s": config.max_session_s,
        }

    @app.get("/v1/characters")
    def characters() -> list[dict]:
        return [
            {"id": c.id, "description": c.description, "image": f"/v1/characters/{c.id}/image.png"}
            for c in demo_characters()
        ]

    @app.get("/v1/characters/{character_id}/image.png")
    def character_picture(character_id: str) -> Response:
        found = find_character(character_id)
        if found is None:
            raise HTTPException(404, f"unknown character {character_id!r}")
        return Response(character_png(found.seed), media_type="image/png")


def _session_routes(
    app: FastAPI, model: ServedModel, config: ServeConfig, authorised: Callable
) -> None:
    """Create, inspect and delete sessions; the session WebSocket."""
    manager: SessionManager = app.state.manager
    metrics: ServeMetrics = app.state.metrics

    @app.post(
        "/v1/sessions",
        status_code=201,
        response_model=SessionCreated,
        dependencies=[Depends(authorised)],
        responses={503: {"description": "busy: the session limit is reached"}},
    )
    async def create_session(req: SessionRequest) -> SessionCreated | JSONResponse:
        try:
            spec = _session_spec(req, model, config)
        except HTTPException:
            metrics.sessions_rejected.inc(reason="bad_request")
            raise
        try:
            s = await manager.create(spec)
        except Busy as err:
            return JSONResponse({"error": "busy", "detail": str(err)}, 503, {"Retry-After": "10"})
        except ValueError as err:  # the engine refused the character or references
            metrics.sessions_rejected.inc(reason="bad_request")
            raise HTTPException(400, str(err)) from None
        e = s.engine
        return SessionCreated(
            id=s.id,
            key=s.key,
            websocket=f"/v1/sessions/{s.id}/ws?key={s.key}",
            protocol=PROTOCOL_VERSION,
            model=model.name,
            random_weights=model.random_weights,
            fps=e.fps,
            width=model.bundle.spec.width,
            height=model.bundle.spec.height,
            chunk_seconds=e.chunk_s,
            sample_rate=e.rate,
        )

    @app.get("/v1/sessions/{session_id}", dependencies=[Depends(authorised)])
    def session_status(session_id: str) -> SessionStatus:
        s = manager.get(session_id)
        if s is None:
            raise HTTPException(404, "no such session")
        return SessionStatus(
            id=s.id,
            attached=s.attached,
            age_s=time.monotonic() - s.created,
            chunks=s.engine.stream.next_index,
            late_chunks=s.engine.late_chunks,
            agent_queued_s=s.engine.agent_queued_s,
        )

    @app.delete("/v1/sessions/{session_id}", status_code=204, dependencies=[Depends(authorised)])
    def delete_session(session_id: str) -> Response:
        s = manager.get(session_id)
        if s is None:
            raise HTTPException(404, "no such session")
        manager.end(s, "deleted")
        return Response(status_code=204)

    @app.websocket("/v1/sessions/{session_id}/ws")
    async def session_socket(ws: WebSocket, session_id: str, key: str = "") -> None:
        s = manager.get(session_id)
        if s is None or not hmac.compare_digest(key.encode(), s.key.encode()):
            await ws.close(code=4404, reason=close_reason("not_found", "no such session or key"))
            return
        if s.attached:
            await ws.close(code=4409, reason=close_reason("attached", "session already attached"))
            return
        s.attached = True
        await ws.accept()
        await WebSocketTransport(ws, s, manager).run()


def _webrtc_routes(app: FastAPI, authorised: Callable) -> None:
    """Attach a WebRTC peer connection to a session (lpm.serve.webrtc)."""
    manager: SessionManager = app.state.manager
    metrics: ServeMetrics = app.state.metrics

    @app.post(
        "/v1/sessions/{session_id}/webrtc/offer",
        response_model=WebRTCAnswer,
        dependencies=[Depends(authorised)],
        responses={
            400: {"description": "the SDP offer is malformed or cannot be answered"},
            404: {"description": "no such session"},
            409: {"description": "the session is already attached"},
            501: {"description": "this server was installed without aiortc"},
        },
    )
    async def webrtc_offer(session_id: str, offer: WebRTCOffer) -> WebRTCAnswer:
        """SDP offer in, SDP answer out: the session's video, agent audio and events flow over
        the new peer connection, and its microphone track is the user audio."""
        if not webrtc_available():
            raise HTTPException(501, "WebRTC needs aiortc: pip install 'lpm[webrtc]'")
        from lpm.serve.webrtc import OfferError, WebRTCTransport

        s = manager.get(session_id)
        if s is None:
            raise HTTPException(404, "no such session")
        if s.attached:
            metrics.webrtc_offers.inc(result="conflict")
            raise HTTPException(409, "session already attached (WebSocket or WebRTC)")
        s.attached = True
        transport = WebRTCTransport(s, manager)
        try:
            sdp = await transport.negotiate(offer.sdp)
        except OfferError as err:
            s.attached = False
            metrics.webrtc_offers.inc(result="bad_offer")
            log.info("webrtc offer refused", extra={"session": s.id, "error": str(err)})
            raise HTTPException(400, str(err)) from None
        metrics.webrtc_offers.inc(result="answered")
        app.state.start_peer(transport.run())
        return WebRTCAnswer(
            sdp=sdp, video_codec=transport.video_codec, audio_codec=transport.audio_codec
        )
