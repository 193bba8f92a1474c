"""A bounded soak on loopback: 4 sessions talking for 60 s, no memory growth, no stalls."""

from __future__ import annotations

import asyncio

import pytest

from lpm.serve.loadgen import drive_many, rss_mb
from tests.serve.conftest import speech, start_server


@pytest.mark.slow
def test_soak_four_sessions(tiny_model):
    user, agent = speech(), speech("Sure, I can tell you all about it right now.")
    with start_server(tiny_model, max_sessions=4) as srv:
        asyncio.run(drive_many(srv.url, 4, 6.0, user, agent))  # warm allocator and caches
        before = rss_mb()
        traces = asyncio.run(drive_many(srv.url, 4, 60.0, user, agent))
        after = rss_mb()
    for t in traces:
        assert t.fps > 22 and not t.errors, t
        assert t.late <= 0.1 * t.chunks, t
        assert t.listen_latency_s and t.respond_latency_s, t
    assert after - before < 40, (before, after)
