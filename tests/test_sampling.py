"""Sampling tests: seeds, guidance, temperature, top-k, top-p, shapes, the cfg ramp, the generation loop."""

from __future__ import annotations

import math

import pytest
import torch
from test_orders import KIND_FOR_ORDER, FakeTokenizer

from argen.errors import ArgenError
from argen.model import Transformer, preset_config
from argen.orders import ORDERS, build_order
from argen.samplers import SAMPLERS, generate
from argen.samplers.logits import cfg_scale_at, filter_top_k, filter_top_p, guide, sample

NUM_CLASSES = 3


def make(name: str):
    tokenizer = FakeTokenizer(KIND_FOR_ORDER[name])
    order = build_order(name, tokenizer)
    torch.manual_seed(0)
    model = Transformer(preset_config("tiny", num_classes=NUM_CLASSES, **order.model_settings(tokenizer)))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return order, tokenizer, model.eval()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


LABELS = torch.tensor([0, 1, 2])


@pytest.mark.parametrize("name", list(ORDERS))
def test_same_seed_same_ids_different_seed_different_ids(name):
    order, tokenizer, model = make(name)
    first = generate(model, order, tokenizer, labels=LABELS, cfg_scale=2.0, generator=seeded(1))
    second = generate(model, order, tokenizer, labels=LABELS, cfg_scale=2.0, generator=seeded(1))
    other = generate(model, order, tokenizer, labels=LABELS, cfg_scale=2.0, generator=seeded(2))
    assert all(torch.equal(a, b) for a, b in zip(first.ids, second.ids))
    assert not all(torch.equal(a, b) for a, b in zip(first.ids, other.ids))


@pytest.mark.parametrize("name", list(ORDERS))
def test_generated_ids_fit_the_vocabulary_and_the_grids(name):
    order, tokenizer, model = make(name)
    steps = []
    output = generate(
        model, order, tokenizer, labels=LABELS, generator=seeded(0), callback=lambda step, ids: steps.append(step)
    )
    assert [tuple(grid.shape) for grid in output.ids] == [(3, h, w) for h, w in tokenizer.grid_shapes]
    assert all(grid.dtype == torch.long and int(grid.min()) >= 0 for grid in output.ids)
    assert all(int(grid.max()) < tokenizer.codebook_size for grid in output.ids)
    num_steps = order.layout(tokenizer.grid_shapes).num_steps
    assert output.forward_passes == num_steps and steps == list(range(num_steps))


@pytest.mark.parametrize("name", ["raster", "scale"])
def test_callback_previews_end_at_the_decoded_image(name):
    order, tokenizer, model = make(name)
    previews = []

    def callback(step, ids):
        previews.append(order.preview(ids, step + 1, tokenizer))

    output = generate(model, order, tokenizer, labels=LABELS, generator=seeded(0), callback=callback)
    assert len(previews) == output.forward_passes
    assert torch.allclose(previews[-1], tokenizer.decode(output.ids))


class BatchSizes:
    """Records the batch size of every model call (each call embeds its inputs once; the sampling engine calls the
    model's parts, not its forward)."""

    def __init__(self, model):
        self.sizes = []
        embed = model.feature_proj if model.config.feature_dim else model.token_embed
        embed.register_forward_pre_hook(lambda module, args: self.sizes.append(args[0].shape[0]))


@pytest.mark.parametrize("name", list(ORDERS))
def test_cfg_scale_one_is_unguided(name):
    order, tokenizer, model = make(name)
    calls = BatchSizes(model)
    plain = generate(model, order, tokenizer, labels=LABELS, cfg_scale=1.0, generator=seeded(3))
    assert set(calls.sizes) == {3}  # no doubled batch, so exactly the unguided computation
    ramp = generate(model, order, tokenizer, labels=LABELS, cfg_scale=1.0, cfg_schedule="linear", generator=seeded(3))
    assert all(torch.equal(a, b) for a, b in zip(plain.ids, ramp.ids))
    calls.sizes.clear()
    generate(model, order, tokenizer, labels=LABELS, cfg_scale=3.0, generator=seeded(3))
    assert set(calls.sizes) == {6}  # guided: conditional and null rows in one call


def test_guidance_combines_conditional_and_null_logits():
    cond, uncond = torch.randn(2, 5), torch.randn(2, 5)
    assert torch.equal(guide(cond, uncond, 1.0), uncond + (cond - uncond))
    assert torch.allclose(guide(cond, uncond, 1.0), cond)
    assert torch.allclose(guide(cond, uncond, 0.0), uncond)
    assert torch.allclose(guide(cond, uncond, 3.0), 3 * cond - 2 * uncond, atol=1e-6)


def test_guided_sampling_uses_the_null_class():
    order, tokenizer, model = make("scale")
    greedy = dict(temperature=0.0)
    null_only = generate(model, order, tokenizer, labels=torch.full((3,), NUM_CLASSES), **greedy)
    # Scale 0 keeps only the null row: the same ids as sampling the null class directly.
    guided = generate(model, order, tokenizer, labels=LABELS, cfg_scale=0.0, **greedy)
    assert all(torch.equal(a, b) for a, b in zip(null_only.ids, guided.ids))


@pytest.mark.parametrize("name", list(ORDERS))
def test_temperature_zero_is_deterministic_argmax_and_top_k_one_is_greedy(name):
    order, tokenizer, model = make(name)
    greedy = generate(model, order, tokenizer, labels=LABELS, temperature=0.0, generator=seeded(1))
    again = generate(model, order, tokenizer, labels=LABELS, temperature=0.0, generator=seeded(2))
    top1 = generate(model, order, tokenizer, labels=LABELS, top_k=1, generator=seeded(3))
    assert all(torch.equal(a, b) for a, b in zip(greedy.ids, again.ids))
    assert all(torch.equal(a, b) for a, b in zip(greedy.ids, top1.ids))
    # Each greedy id is the argmax of the teacher-forced logits given the greedy ids before it.
    layout = order.layout(tokenizer.grid_shapes)
    inputs, targets = order.train_inputs(greedy.ids, tokenizer)
    logits = order.logits(model(inputs, LABELS, layout=layout), layout)
    assert torch.equal(logits.argmax(dim=-1), targets)


@pytest.mark.parametrize("name", list(ORDERS))
def test_decoding_without_cache_gives_the_same_greedy_ids(name):
    order, tokenizer, model = make(name)
    cached = generate(model, order, tokenizer, labels=LABELS, cfg_scale=2.0, temperature=0.0)
    uncached = generate(model, order, tokenizer, labels=LABELS, cfg_scale=2.0, temperature=0.0, use_cache=False)
    assert all(torch.equal(a, b) for a, b in zip(cached.ids, uncached.ids))
    assert cached.forward_passes == uncached.forward_passes


def test_sample_temperature_zero_is_argmax_and_seeded_sampling_follows_the_distribution():
    logits = torch.randn(4, 7, 10)
    assert torch.equal(sample(logits, temperature=0.0), logits.argmax(dim=-1))
    assert torch.equal(sample(logits, top_k=1, generator=seeded(0)), logits.argmax(dim=-1))
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    draws = sample(probs.log().expand(20000, 4), generator=seeded(0))
    frequencies = torch.bincount(draws, minlength=4).float() / 20000
    assert torch.allclose(frequencies, probs, atol=0.02)
    assert torch.equal(sample(logits, generator=seeded(5)), sample(logits, generator=seeded(5)))


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.0]])
    kept = filter_top_k(logits, 2)
    assert torch.equal(torch.isfinite(kept), torch.tensor([[False, True, True, False, False]]))
    assert torch.equal(filter_top_k(logits, 0), logits)


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [
        (0.3, [0]),
        (0.45, [0]),
        (0.6, [0, 1]),
        (0.79, [0, 1]),
        (0.9, [0, 1, 2]),
        (0.97, [0, 1, 2, 3]),
        (1.0, [0, 1, 2, 3]),
    ],
)
def test_top_p_keeps_the_minimal_nucleus(top_p, kept):
    # Shuffled so that the nucleus is found by probability, not by position.
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])
    by_rank = [1, 3, 0, 2]  # indices from most to least likely
    filtered = filter_top_p(probs.log()[None], top_p)[0]
    expected = torch.zeros(4, dtype=torch.bool)
    expected[[by_rank[k] for k in kept]] = True
    assert torch.equal(torch.isfinite(filtered), expected)
    assert torch.equal(filtered[expected], probs.log()[expected])
    if len(kept) > 1:
        draws = sample(probs.log().expand(2000, 4), top_p=top_p, generator=seeded(0))
        assert set(draws.unique().tolist()) == {by_rank[k] for k in kept}


def test_linear_cfg_ramp_values():
    linear = [cfg_scale_at(step, 5, cfg_scale=3.0, schedule="linear") for step in range(5)]
    assert linear == [1.0, 1.5, 2.0, 2.5, 3.0]
    # VAR (cfg=1.5, 10 scales): t = 1.5 · si / 9 and logits = (1 + t) · cond - t · uncond, i.e. s = 1 + t.
    var = [1 + 1.5 * si / 9 for si in range(10)]
    assert all(math.isclose(cfg_scale_at(si, 10, cfg_scale=2.5, schedule="linear"), s) for si, s in enumerate(var))
    assert [cfg_scale_at(step, 5, cfg_scale=3.0) for step in range(5)] == [3.0] * 5
    assert cfg_scale_at(0, 1, cfg_scale=3.0, schedule="linear") == 3.0
    with pytest.raises(ArgenError, match="unknown cfg schedule"):
        cfg_scale_at(0, 5, cfg_scale=2.0, schedule="cosine")


def test_bad_requests_are_refused_and_model_mode_is_restored():
    order, tokenizer, model = make("raster")
    with pytest.raises(ArgenError, match="batch_size"):
        generate(model, order, tokenizer)
    with pytest.raises(ArgenError, match="classifier-free guidance"):
        generate(model, order, tokenizer, batch_size=2, cfg_scale=2.0)
    with pytest.raises(ArgenError, match="unknown cfg schedule"):
        generate(model, order, tokenizer, labels=LABELS, cfg_schedule="cosine")
    with pytest.raises(ArgenError, match="temperature"):
        generate(model, order, tokenizer, labels=LABELS, temperature=-1.0)
    with pytest.raises(ArgenError, match="does not fit order"):
        generate(model, build_order("neighbor", tokenizer), tokenizer, labels=LABELS)
    model.train()
    generate(model, order, tokenizer, batch_size=2, generator=seeded(0))  # unconditional: the null class
    assert model.training
    assert SAMPLERS["ar"] is generate
