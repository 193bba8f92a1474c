"""lpm.serve: real-time, full-duplex character sessions over HTTP + WebSocket or WebRTC.

    config.py       ServeConfig: limits and defaults, validated
    loading.py      which online model: a bundle directory, the shipped one, or random weights
    protocol.py     the versioned WebSocket protocol: message types, binary framing, errors
    audio.py        PCM16 / Opus decoding + resampling, webrtcvad, audio-rate metering
    scheduler.py    FairScheduler: earliest-deadline-first chunk admission across sessions
    engine.py       SessionEngine: audio timeline, idle/listening/responding/barge-in, pacing
    session.py      LiveSession (applies client messages), SessionManager (limit, reaping)
    transport.py    SessionTransport (receiver, pacer, writer tasks) and the WebSocket one
    webrtc.py       the WebRTC transport (aiortc): SDP answer, media tracks, data channel, ICE
    app.py          FastAPI routes: sessions, WebSocket, /healthz, /metrics, client page
    server.py       uvicorn in the foreground or in a background thread
    metrics.py      Prometheus text exposition (lpm_* metrics)
    characters.py   demo characters (held-out Stage identities) and the built-in demo agent
    loadgen.py      scripted protocol clients for benchmarks, soak runs and tests
    static/         the browser client (index.html)
    integrations/   LPMClient (asyncio protocol client), the Pipecat adapter

Only `lpm.inference` is used for generation (and `lpm.data.stage` for demo characters).
"""
