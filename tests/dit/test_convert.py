"""Wan2.1 -> LPM conversion, held to diffusers' own `WanTransformer3DModel` on tiny random models.

Every parity test goes through the path `lpm convert wan` takes: convert to an LPM checkpoint on
disk, then `load_lpm_checkpoint`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lpm.config import ModelConfig, get_model_config
from lpm.models.dit.checkpoint import load_lpm_checkpoint, save_lpm_checkpoint
from lpm.models.dit.model import LPMTransformer
from lpm.models.dit.state_dict_adapter import convert_wan_checkpoint, load_wan_weights

diffusers = pytest.importorskip("diffusers")

DIM, HEADS, FFN, LAYERS, TEXT_DIM, FREQ_DIM, IMAGE_DIM = 32, 2, 64, 2, 32, 64, 24
TOL = 1e-5


def tiny_cfg(**changes) -> ModelConfig:
    """The LPM config matching the tiny Wan models below."""
    fields = dict(name="wan-tiny", dim=DIM, num_heads=HEADS, ffn_dim=FFN, num_layers=LAYERS,
                  freq_dim=FREQ_DIM, text_dim=TEXT_DIM, audio_dim=16, eps=1e-6)  # fmt: skip
    return get_model_config("lpm-nano").replace(**{**fields, **changes})


def tiny_wan(i2v: bool) -> diffusers.WanTransformer3DModel:
    """A tiny diffusers Wan2.1 transformer with random values in every parameter."""
    torch.manual_seed(1 if i2v else 0)
    model = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=DIM // HEADS,
        in_channels=36 if i2v else 16, out_channels=16, text_dim=TEXT_DIM, freq_dim=FREQ_DIM,
        ffn_dim=FFN, num_layers=LAYERS, image_dim=IMAGE_DIM if i2v else None,
        added_kv_proj_dim=DIM if i2v else None,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # norm scales near 1, but not 1
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
        if i2v:  # silence the image branch so the two models compute the same function
            for block in model.blocks:
                block.attn2.add_v_proj.weight.zero_()
                block.attn2.add_v_proj.bias.zero_()
    return model


# The original Wan2.1 release's names for diffusers' (Wan2.1 wan/modules/model.py: WanModel).
DIFFUSERS_TO_ORIGINAL = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    ("proj_out", "head.head"),
    ("attn1.to_out.0", "self_attn.o"),
    ("attn2.to_out.0", "cross_attn.o"),
    ("attn2.add_k_proj", "cross_attn.k_img"),
    ("attn2.add_v_proj", "cross_attn.v_img"),
    ("attn2.norm_added_k", "cross_attn.norm_k_img"),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("norm2", "norm3"),  # the cross-attention LayerNorm
]


def to_original_name(name: str) -> str:
    if name == "scale_shift_table":
        return "head.modulation"
    if name.endswith(".scale_shift_table"):
        return name.replace("scale_shift_table", "modulation")
    for theirs, original in DIFFUSERS_TO_ORIGINAL:
        if f".{theirs}." in f".{name}":
            return name.replace(theirs, original, 1)
    for attn, original in (("attn1", "self_attn"), ("attn2", "cross_attn")):
        for p in "qkv":
            name = name.replace(f"{attn}.to_{p}.", f"{original}.{p}.")
        name = name.replace(f"{attn}.norm_", f"{original}.norm_")
    return name


@pytest.fixture(scope="module")
def wan_models(tmp_path_factory) -> dict[str, tuple[diffusers.WanTransformer3DModel, Path]]:
    """Tiny T2V and I2V models, each saved in the diffusers layout and the original layout."""
    root = tmp_path_factory.mktemp("wan")
    out = {}
    for kind in ("t2v", "i2v"):
        model = tiny_wan(i2v=kind == "i2v")
        model.save_pretrained(root / f"{kind}-diffusers")
        state = {to_original_name(k): v.contiguous() for k, v in model.state_dict().items()}
        original = root / f"{kind}-original"
        original.mkdir()
        keys = sorted(state)
        shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2],
                  "diffusion_pytorch_model-00002-of-00002.safetensors": keys[1::2]}  # fmt: skip
        for file, names in shards.items():
            save_file({k: state[k] for k in names}, str(original / file))
        index = {"metadata": {}, "weight_map": {k: f for f, ns in shards.items() for k in ns}}
        (original / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
        (original / "config.json").write_text(json.dumps({
            "_class_name": "WanModel", "model_type": kind, "dim": DIM, "num_heads": HEADS,
            "ffn_dim": FFN, "num_layers": LAYERS, "freq_dim": FREQ_DIM, "text_dim": TEXT_DIM,
            "in_dim": 36 if kind == "i2v" else 16, "out_dim": 16, "eps": 1e-6,
        }))  # fmt: skip
        out[kind] = (model, root / f"{kind}-diffusers", original)
    return out


def inputs(i2v: bool, audio: bool = False) -> dict:
    g = torch.Generator().manual_seed(7)
    # Diffusers' I2V attention takes the last 512 context tokens as text, the rest as image.
    n_text = 512 if i2v else 9
    x = torch.randn(2, 16, 3, 4, 6, generator=g)
    data = {
        "x": x,
        "t": torch.tensor([250.0, 800.0]),
        "text": torch.randn(2, n_text, TEXT_DIM, generator=g),
    }
    data["image"] = torch.randn(2, 5, IMAGE_DIM, generator=g) if i2v else None
    if audio:
        data["speak"], data["listen"] = (torch.randn(2, 12, 16, generator=g) for _ in range(2))
    return data


def reference_output(model, data: dict, i2v: bool) -> torch.Tensor:
    x = data["x"]
    if i2v:  # the 20 channels LPM drops (mask 4 + first-frame latent 16) are fed zeros
        x = torch.cat((x, torch.zeros(2, 20, *x.shape[2:])), dim=1)
    with torch.no_grad():
        return model(x, data["t"], data["text"], encoder_hidden_states_image=data["image"],
                     return_dict=False)[0]  # fmt: skip


def lpm_output(model: LPMTransformer, data: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(data["x"], data["t"], text=data["text"], speak_audio=data.get("speak"),
                     listen_audio=data.get("listen"))  # fmt: skip


@pytest.mark.parametrize("kind", ["t2v", "i2v"])
@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_parity_with_diffusers(wan_models, tmp_path, kind, layout):
    model, diffusers_dir, original_dir = wan_models[kind]
    src = diffusers_dir if layout == "diffusers" else original_dir
    report = convert_wan_checkpoint(src, tmp_path / "lpm", config=tiny_cfg())
    assert report.layout == ("wan" if layout == "original" else "diffusers")
    assert report.reduced_in_channels == (kind == "i2v")
    assert bool(report.dropped) == (kind == "i2v")
    ours = load_lpm_checkpoint(tmp_path / "lpm")
    data = inputs(kind == "i2v", audio=True)  # fresh audio paths must add exactly nothing
    expected = reference_output(model, data, kind == "i2v")
    got = lpm_output(ours, data)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= TOL
    assert expected.abs().max().item() > 0.1  # a non-trivial function was compared


def test_audio_modules_fresh_and_deterministic(wan_models, tmp_path):
    _, src, _ = wan_models["t2v"]
    convert_wan_checkpoint(src, tmp_path / "a", config=tiny_cfg(), seed=3)
    convert_wan_checkpoint(src, tmp_path / "b", config=tiny_cfg(), seed=3)
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for i in range(LAYERS):
        p = f"blocks.{i}.cross_attn."
        assert not a[p + "audio_v.weight"].any() and not a[p + "audio_v.bias"].any()
        assert not a[p + "audio_o.bias"].any()
        assert a[p + "audio_k.weight"].std() > 0 and a[p + "audio_o.weight"].std() > 0
        assert torch.equal(a[p + "norm_audio_k.weight"], torch.ones(DIM))
    assert a["audio_embed.fc1.weight"].std() > 0


def test_load_wan_weights_in_memory_matches_converter(wan_models, tmp_path):
    _, src, original = wan_models["i2v"]
    convert_wan_checkpoint(src, tmp_path / "lpm", config=tiny_cfg())
    stored = load_file(str(tmp_path / "lpm" / "model.safetensors"))
    model = LPMTransformer(tiny_cfg())
    audio_before = model.blocks[0].cross_attn.audio_k.weight.clone()
    load_wan_weights(model, original)
    state = model.state_dict()
    assert torch.equal(state["blocks.0.cross_attn.audio_k.weight"], audio_before)
    for key, tensor in stored.items():
        if "audio" not in key:
            assert torch.equal(state[key], tensor), key


def test_lpm_checkpoint_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = LPMTransformer(tiny_cfg())
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    save_lpm_checkpoint(model, tmp_path / "one")
    save_lpm_checkpoint(model, tmp_path / "sharded", max_shard_bytes=20_000)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 1
    for d in ("one", "sharded"):
        loaded = load_lpm_checkpoint(tmp_path / d)
        assert loaded.cfg == model.cfg
        ref, got = model.state_dict(), loaded.state_dict()
        assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    half = load_lpm_checkpoint(tmp_path / "one", dtype=torch.bfloat16)
    assert half.patch_embed.weight.dtype == torch.bfloat16
    with pytest.raises(FileExistsError):
        save_lpm_checkpoint(model, tmp_path / "one")


def test_lpm_checkpoint_errors_name_the_tensor(tmp_path):
    model = LPMTransformer(tiny_cfg())
    save_lpm_checkpoint(model, tmp_path / "ck")
    weights = tmp_path / "ck" / "model.safetensors"
    state = load_file(str(weights))
    state["blocks.1.ffn.fc1.weight"] = torch.zeros(FFN, DIM + 2)
    save_file(state, str(weights))
    with pytest.raises(ValueError, match=r"blocks\.1\.ffn\.fc1\.weight.*\(64, 32\)"):
        load_lpm_checkpoint(tmp_path / "ck")
    del state["blocks.1.ffn.fc1.weight"]
    save_file(state, str(weights))
    with pytest.raises(ValueError, match=r"missing.*blocks\.1\.ffn\.fc1\.weight"):
        load_lpm_checkpoint(tmp_path / "ck")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_lpm_checkpoint(tmp_path)


def _assert_nothing_written(parent: Path, before: set[str]) -> None:
    assert {p.name for p in parent.iterdir()} == before


def test_missing_shard(wan_models, tmp_path):
    _, _, original = wan_models["t2v"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in original.iterdir():
        if "-00002-of" not in f.name:
            (broken / f.name).write_bytes(f.read_bytes())
    with pytest.raises(FileNotFoundError, match="00002-of-00002.*missing"):
        convert_wan_checkpoint(broken, tmp_path / "out", config=tiny_cfg())
    assert not (tmp_path / "out").exists()


def test_wrong_shape_names_key_and_shape(wan_models, tmp_path):
    model, _, _ = wan_models["t2v"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["blocks.1.attn2.to_v.weight"] = torch.zeros(DIM, DIM + 4)
    src = tmp_path / "src"
    src.mkdir()
    save_file(state, str(src / "diffusion_pytorch_model.safetensors"))
    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=r"'blocks\.1\.attn2\.to_v\.weight'.*expected \(32, 32\)"):
        convert_wan_checkpoint(src, tmp_path / "out", config=tiny_cfg())
    _assert_nothing_written(tmp_path, before)


def test_missing_key_and_config_mismatch(wan_models, tmp_path):
    model, diffusers_dir, _ = wan_models["t2v"]
    state = {k: v for k, v in model.state_dict().items() if k != "blocks.1.attn1.norm_k.weight"}
    src = tmp_path / "src"
    src.mkdir()
    save_file(state, str(src / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ValueError, match=r"lacks 'blocks\.1\.attn1\.norm_k\.weight'.*\(32,\)"):
        convert_wan_checkpoint(src, tmp_path / "out", config=tiny_cfg())
    with pytest.raises(ValueError, match="dim: checkpoint 32, config 1536"):
        convert_wan_checkpoint(diffusers_dir, tmp_path / "out", config="lpm-1.3b")
    with pytest.raises(ValueError, match="num_heads: checkpoint 2, config 4"):
        convert_wan_checkpoint(diffusers_dir, tmp_path / "out", config=tiny_cfg(num_heads=4))
    assert not (tmp_path / "out").exists()


def test_other_models_are_refused(tmp_path):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1], num_res_blocks=1,
                                     temperal_downsample=[False])  # fmt: skip
    vae.save_pretrained(tmp_path / "vae")
    with pytest.raises(ValueError, match="AutoencoderKLWan, not a Wan2.1 transformer"):
        convert_wan_checkpoint(tmp_path / "vae", tmp_path / "out", config=tiny_cfg())
    (tmp_path / "vae" / "config.json").unlink()  # no config: told apart by tensor names alone
    with pytest.raises(ValueError, match="no Wan2.1 transformer tensors"):
        convert_wan_checkpoint(tmp_path / "vae", tmp_path / "out", config=tiny_cfg())
    random = tmp_path / "random.safetensors"
    save_file(
        {"encoder.layer.0.weight": torch.randn(3, 3), "head.weight": torch.ones(2)}, str(random)
    )
    with pytest.raises(ValueError, match="no Wan2.1 transformer tensors"):
        convert_wan_checkpoint(random, tmp_path / "out", config=tiny_cfg())
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="never loaded"):
        convert_wan_checkpoint(pickled, tmp_path / "out", config=tiny_cfg())
    assert not (tmp_path / "out").exists()


def test_failure_while_writing_leaves_no_output(wan_models, tmp_path):
    _, _, original = wan_models["t2v"]

    def interrupt(done: int, total: int, name: str) -> None:
        if done == 2:
            raise RuntimeError("interrupted")

    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError, match="interrupted"):
        convert_wan_checkpoint(original, tmp_path / "out", config=tiny_cfg(), progress=interrupt)
    _assert_nothing_written(tmp_path, before)


def test_cli_convert_wan(wan_models, tmp_path):
    from lpm.cli.main import app

    model, diffusers_dir, original_dir = wan_models["i2v"]
    runner = CliRunner()
    out = tmp_path / "lpm"
    result = runner.invoke(app, ["convert", "wan", "--src", str(original_dir), "--out", str(out),
                                 "--config", "auto", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["layout"] == "wan" and summary["reduced_in_channels"] and summary["dropped"] > 0
    ours = load_lpm_checkpoint(out)
    assert ours.cfg.name == "lpm-from-wan" and ours.cfg.in_channels == 16
    data = inputs(i2v=True)
    assert (lpm_output(ours, data) - reference_output(model, data, True)).abs().max() <= TOL

    again = runner.invoke(app, ["convert", "wan", "--src", str(diffusers_dir), "--out", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    config_file = tmp_path / "cfg.json"
    config_file.write_text(tiny_cfg().to_json())
    args = ["--config", str(config_file), "--dtype", "bf16", "--overwrite"]
    bf16 = runner.invoke(
        app, ["convert", "wan", "--src", str(diffusers_dir), "--out", str(out), *args]
    )
    assert bf16.exit_code == 0, bf16.output
    assert load_lpm_checkpoint(out).patch_embed.weight.dtype == torch.bfloat16
    bad = runner.invoke(app, ["convert", "wan", "--src", str(diffusers_dir), "--out",
                              str(tmp_path / "x"), "--config", "lpm-17b"])  # fmt: skip
    assert bad.exit_code == 1 and "dim: checkpoint 32, config 5120" in bad.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("dim", "heads", "ffn", "layers", "in_channels", "name"),
    [(1536, 12, 8960, 30, 16, "lpm-1.3b"), (5120, 40, 13824, 40, 36, "lpm-17b")],
)
def test_auto_picks_the_named_config(dim, heads, ffn, layers, in_channels, name):
    from lpm.models.dit.state_dict_adapter import WanGeometry, resolve_config

    geom = WanGeometry(
        layout="diffusers", dim=dim, num_layers=layers, ffn_dim=ffn, freq_dim=256, text_dim=4096,
        in_channels=in_channels, out_channels=16, patch_size=(1, 2, 2), qk_norm=True,
        cross_attn_norm=True, image_branch=in_channels == 36, num_heads=heads, eps=1e-6,
    )  # fmt: skip
    assert resolve_config(geom, "auto").name == name
    assert resolve_config(geom, name).name == name


def test_diffusers_pipeline_root_uses_its_transformer(wan_models, tmp_path):
    _, diffusers_dir, _ = wan_models["t2v"]
    pipe = tmp_path / "pipe"
    (pipe / "transformer").mkdir(parents=True)
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    for f in diffusers_dir.iterdir():
        (pipe / "transformer" / f.name).write_bytes(f.read_bytes())
    report = convert_wan_checkpoint(pipe, tmp_path / "out", config=tiny_cfg())
    assert report.layout == "diffusers" and "transformer" in report.source


def test_single_file_with_export_prefix(wan_models, tmp_path):
    model, _, _ = wan_models["t2v"]
    state = {
        f"model.diffusion_model.{to_original_name(k)}": v for k, v in model.state_dict().items()
    }
    save_file(state, str(tmp_path / "wan.safetensors"))
    report = convert_wan_checkpoint(
        tmp_path / "wan.safetensors", tmp_path / "out", config=tiny_cfg()
    )
    assert report.layout == "wan"
    data = inputs(i2v=False)
    ours = load_lpm_checkpoint(tmp_path / "out")
    assert (lpm_output(ours, data) - reference_output(model, data, False)).abs().max() <= TOL
