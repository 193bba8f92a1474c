"""`lpm model info`: parameter counts on the meta device, FLOP formula against real forwards."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lpm.config import get_model_config
from lpm.models.dit.info import ForwardShape, count_parameters, forward_flops, online_chunk_shape
from lpm.models.dit.model import LPMTransformer, References


def counted_flops(fn) -> int:
    # The math SDPA kernel decomposes into matmuls that FlopCounterMode sees.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def test_flop_formula_matches_counted_flops_offline_and_streaming():
    cfg = get_model_config("lpm-nano").replace(num_layers=2, fps=8, sink_chunks=1, window_chunks=1)
    model = LPMTransformer(cfg).eval()
    f, h, w, s = 4, 8, 8, 16
    x = torch.randn(1, 16, f, h, w)
    text = torch.randn(1, 7, cfg.text_dim)
    audio = torch.randn(1, 20, cfg.audio_dim)
    refs = References(torch.randn(1, 16, 2, h, w), (("global", 0), ("body", 1)))
    offline = ForwardShape(
        query_tokens=(f + 2) * s,
        key_tokens=(f + 2) * s,
        video_frames=f,
        ref_frames=2,
        text_tokens=7,
        audio_tokens=20,
        tokens_per_frame=s,
    )
    got = counted_flops(
        lambda: model(
            x,
            torch.tensor([500.0]),
            text=text,
            speak_audio=audio,
            listen_audio=audio,
            references=refs,
        )
    )
    assert got == forward_flops(cfg, offline)

    cache = model.new_cache()
    model.cache_references(refs, cache)
    chunk = x[:, :, : cfg.latents_per_chunk]
    for _ in range(3):
        model(
            chunk, torch.tensor([0.0]), attention="chunk_causal", kv_cache=cache, cache_write=True
        )
    n_chunk = cfg.latents_per_chunk * s
    step = ForwardShape(
        query_tokens=n_chunk,
        key_tokens=2 * s + 2 * n_chunk + n_chunk,
        video_frames=cfg.latents_per_chunk,
        ref_frames=0,
        text_tokens=7,
        audio_tokens=20,
        tokens_per_frame=s,
    )
    got = counted_flops(
        lambda: model(
            chunk,
            torch.tensor([500.0]),
            text=text,
            speak_audio=audio,
            listen_audio=audio,
            attention="chunk_causal",
            kv_cache=cache,
        )
    )
    assert got == forward_flops(cfg, step)


def test_lpm_17b_lands_on_the_design_budget():
    params = count_parameters(get_model_config("lpm-17b"))
    assert 16.9e9 <= params <= 17.5e9
    assert 1.2e9 <= count_parameters(get_model_config("lpm-1.3b")) <= 1.8e9
    shape = online_chunk_shape(get_model_config("lpm-17b"), 480, 832)
    assert shape.query_tokens == 6 * (60 // 2) * (104 // 2)


def test_model_info_cli_json():
    out = subprocess.run(
        [sys.executable, "-m", "lpm.cli.main", "model", "info", "--config", "lpm-17b", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert 16.9e9 <= report["params"] <= 17.5e9
    assert report["tokens_per_chunk_480p"] == 9360
    assert report["flops_per_chunk_480p"] > 0
    assert report["weights_bf16_bytes"] == 2 * report["params"]
    assert report["training_state_bytes"] == 20 * report["params"]
    assert "streaming_bytes_480p" not in report  # an offline config streams nothing


def test_an_online_pair_does_not_fit_one_h200_at_17b_and_does_at_1_3b():
    """Backbone + refiner in bf16 with their sink + window caches (docs/streaming.md)."""
    from lpm.models.dit.info import kv_cache_bytes, model_report

    for name, fits in (("lpm-17b-online", False), ("lpm-1.3b-online", True)):
        cfg = get_model_config(name)
        report = model_report(cfg)
        pair = report["streaming_bytes_480p"]
        assert pair == 2 * (report["weights_bf16_bytes"] + kv_cache_bytes(cfg, 480, 832))
        assert (pair < 141e9) == fits, (name, pair)
    bad = subprocess.run(
        [sys.executable, "-m", "lpm.cli.main", "model", "info", "--config", "lpm-9b"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "unknown model config" in bad.stderr


def test_model_info_at_any_resolution_the_vae_and_patching_tile():
    from typer.testing import CliRunner

    from lpm.cli.main import app

    res = CliRunner().invoke(
        app,
        [
            "model",
            "info",
            "--config",
            "lpm-1.3b-online",
            "--resolution",
            "320x576",
            "--resolution",
            "480p",
            "--json",
        ],  # fmt: skip
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["tokens_per_chunk_320x576"] == 6 * (320 // 16) * (576 // 16)
    assert report["tokens_per_chunk_480p"] == 9360 and "tokens_per_chunk_720p" not in report
    assert report["flops_per_online_chunk_320x576"] < report["flops_per_online_chunk_480p"] / 3
    for bad, says in (("100x100", "multiple of 16x16"), ("big", "HEIGHTxWIDTH")):
        res = CliRunner().invoke(
            app, ["model", "info", "--resolution", bad], env={"COLUMNS": "200"}
        )
        assert res.exit_code == 2 and says in res.output, res.output
