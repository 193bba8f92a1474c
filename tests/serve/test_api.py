"""HTTP API: health, metrics, OpenAPI, characters, session creation, limits, auth."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from tests.serve.conftest import Client, http, new_session, start_server


def test_health_characters_openapi_and_metrics(server):
    status, health = http("GET", server.url + "/healthz")
    assert status == 200 and health["status"] == "ok" and health["random_weights"] is True
    status, chars = http("GET", server.url + "/v1/characters")
    assert status == 200 and len(chars) >= 4 and all(c["id"].startswith("stage-09") for c in chars)
    status, png = http("GET", server.url + chars[0]["image"])
    assert status == 200
    status, schema = http("GET", server.url + "/openapi.json")
    assert status == 200 and "/v1/sessions" in schema["paths"] and "/healthz" in schema["paths"]
    status, text = http("GET", server.url + "/metrics")
    assert status == 200
    for name in (
        "lpm_sessions",
        "lpm_chunk_compute_seconds",
        "lpm_realtime_factor",
        "lpm_chunks_dropped_total",
        "lpm_input_to_frame_seconds",
    ):
        assert f"# TYPE {name} " in text


def test_session_lifecycle_and_bad_requests(server):
    created = new_session(server, persona="A calm, friendly host.")
    assert created["protocol"] == 1 and created["fps"] == 24
    status, info = http("GET", f"{server.url}/v1/sessions/{created['id']}")
    assert status == 200 and info["attached"] is False
    assert http("DELETE", f"{server.url}/v1/sessions/{created['id']}")[0] == 204
    assert http("GET", f"{server.url}/v1/sessions/{created['id']}")[0] == 404
    url = server.url + "/v1/sessions"
    assert http("POST", url, {"character": "stage-000001"})[0] == 404
    assert http("POST", url, {"image": "not base64!"})[0] == 400
    assert http("POST", url, {"image": base64.b64encode(b"garbage").decode()})[0] == 400
    assert http("POST", url, {"character": "stage-090000", "model": "lpm-17b"})[0] == 400
    assert http("POST", url, {})[0] == 400
    assert http("POST", url, {"character": "stage-090000", "persona": "x" * 5000})[0] == 400
    assert http("POST", url, {"character": 5})[0] == 422


def test_own_image_and_references(server):
    img = np.full((48, 40, 3), 180, np.uint8)
    b64 = base64.b64encode(cv2.imencode(".png", img)[1].tobytes()).decode()
    refs = [{"kind": "expression", "subtype": 2, "image": b64}]
    created = new_session(server, character=None, image=b64, references=refs)
    client = Client(server, created)
    client.until(lambda e: e["type"] == "chunk")
    client.close()


def test_busy_when_full(tiny_model):
    with start_server(tiny_model, max_sessions=1) as srv:
        new_session(srv)
        status, body = http("POST", srv.url + "/v1/sessions", {"character": "stage-090000"})
        assert status == 503 and body["error"] == "busy"
        _, metrics = http("GET", srv.url + "/metrics")
        assert 'lpm_sessions_rejected_total{reason="busy"} 1' in metrics


def test_bearer_token_and_session_key(tiny_model):
    from websockets.exceptions import InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    with start_server(tiny_model, token="s3cret") as srv:
        url = srv.url + "/v1/sessions"
        assert http("POST", url, {"character": "stage-090000"})[0] == 401
        assert http("POST", url, {"character": "stage-090000"}, token="wrong")[0] == 401
        status, created = http("POST", url, {"character": "stage-090000"}, token="s3cret")
        assert status == 201
        assert http("GET", srv.url + "/healthz")[0] == 200  # probes need no token
        bad = f"ws://127.0.0.1:{srv.port}/v1/sessions/{created['id']}/ws?key=nope"
        with pytest.raises((InvalidStatus, WebSocketException)), connect(bad) as ws:
            ws.recv(timeout=5)


@pytest.mark.parametrize("random_weights", [True, False])
def test_serve_device_is_checked_before_loading(random_weights):
    from lpm.serve.loading import load_served_model

    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        load_served_model(None, random_weights=random_weights, device="tpu")


def test_serve_cli_names_a_bad_log_level():
    from typer.testing import CliRunner

    from lpm.cli.main import app

    res = CliRunner().invoke(app, ["serve", "--random-weights", "--log-level", "loud"])
    assert res.exit_code == 2 and "'loud'" in res.output
    assert all(level in res.output for level in ("debug", "info", "warning", "error"))
