"""The training rollout is the streaming loop: same chunks as `ChunkStepper` and
`StreamingSession` for the same inputs and seed; gradients only where asked."""

from __future__ import annotations

import numpy as np
import torch

from lpm.distill.rollout import rollout, teacher_forced
from lpm.inference.chunk_step import ChunkStepper
from lpm.inference.pipeline import _references
from tests.inference.test_pipeline import face
from tests.inference.test_streaming import online_bundle, session

CPU = torch.device("cpu")


def _stream_inputs(chunks: int):
    """A live session, and the conditions and references it will use for ``chunks`` chunks
    (read from a twin session: reading a window trims the audio buffer)."""
    bundle = online_bundle()
    live, twin = session(bundle), session(bundle)
    with torch.no_grad():
        first = twin._encode_image(face())
        conds = [twin.conditions(i) for i in range(chunks)]
    return bundle, live, _references(first, first, []), conds


def test_rollout_equals_streaming_session_and_chunk_stepper():
    bundle, live, refs, conds = _stream_inputs(3)
    shape, schedule = live.latent_shape, live.schedule

    # the training rollout, with gradients on the backbone's last step as in stage 3
    out = rollout(bundle.transformer, bundle.refiner, refs, schedule, conds, shape, CPU,
                  seed=0, backbone_grad_steps=(1,))  # fmt: skip
    assert out.refined[0].requires_grad and out.backbone[0].requires_grad

    # the streaming session: capture the latents it hands to the decoder
    seen: list[torch.Tensor] = []
    decode = live.decode
    live.decode = lambda x, *rest: (seen.append(x), decode(x, *rest))[1]
    for _ in range(3):
        live.step()
    assert len(seen) == 3
    for a, b in zip(out.refined, seen, strict=True):
        assert torch.equal(a.detach(), b)

    # and a bare ChunkStepper under no_grad (backbone chunks too)
    stepper = ChunkStepper(bundle.transformer, bundle.refiner, refs, schedule, seed=0)
    with torch.no_grad():
        for c, cond in enumerate(conds):
            x0 = stepper.backbone_step(cond, shape, CPU)
            assert torch.equal(x0, out.backbone[c].detach())
            assert torch.equal(stepper.refine_step(cond, x0), out.refined[c].detach())
    assert out.video().shape == (1, 16, 3 * shape[2], *shape[3:])


def test_gradients_reach_only_the_chosen_denoising_steps():
    bundle, live, refs, conds = _stream_inputs(2)
    model, shape = bundle.transformer, live.latent_shape
    probe = model.head.proj.weight

    def grad_norm(steps):
        model.zero_grad(set_to_none=True)
        out = rollout(model, None, refs, live.schedule, conds, shape, CPU, seed=1,
                      backbone_grad_steps=steps)  # fmt: skip
        if not out.video("backbone").requires_grad:
            return None
        out.video("backbone").square().mean().backward()
        return probe.grad.norm().item()

    assert grad_norm(()) is None  # frozen backbone (stage 4)
    last, both = grad_norm((1,)), grad_norm(None)
    assert last > 0 and both > 0 and not np.isclose(last, both)


def test_teacher_forced_prediction_matches_a_stream_fed_with_the_history():
    bundle, live, refs, conds = _stream_inputs(2)
    model, shape = bundle.transformer, live.latent_shape
    g = torch.Generator().manual_seed(0)
    history = [torch.randn(shape, generator=g) for _ in range(2)]
    inputs = [torch.randn(shape, generator=g) for _ in range(2)]
    with torch.no_grad():
        preds = teacher_forced(model, refs, conds, inputs, [0.75, 0.75], history,
                               history_sigma=0.0)  # fmt: skip
        cache = model.new_cache(history="clean")
        model.cache_references(refs, cache)
        model.write_history(history[0], cache, **conds[0].kwargs())
        t = torch.full((1,), 750.0)
        v = model(inputs[1], t, attention="chunk_causal", kv_cache=cache, **conds[1].kwargs())
    assert torch.allclose(preds[1], inputs[1] - 0.75 * v, atol=1e-6)


def test_activation_checkpointing_recomputes_cached_chunks_with_the_cache_they_read():
    """A rollout's chunks attend to a cache that later chunks change before backward; a block
    recomputed in backward must see the cache as its forward did, and stage nothing again."""
    import copy

    from lpm.parallel.parallelize import apply_activation_checkpointing

    bundle, live, refs, conds = _stream_inputs(3)
    plain = bundle.transformer
    checkpointed = copy.deepcopy(plain)
    assert apply_activation_checkpointing(checkpointed) == len(plain.blocks)
    grads = []
    for model in (plain, checkpointed):
        model.zero_grad(set_to_none=True)
        out = rollout(model, None, refs, live.schedule, conds, live.latent_shape, CPU, seed=2,
                      backbone_grad_steps=None)  # fmt: skip
        out.video("backbone").square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)
