"""The lean decoding loop changes nothing it should not: the running latent, the per-generation memo and the unmasked
one-step calls give the ids of the plain loop bit for bit; the top-k and inverse-CDF draws keep the distribution;
--compile and --precision bf16 agree with eager fp32 within float tolerance; impossible combinations are refused."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from scipy.stats import chisquare
from test_orders import KIND_FOR_ORDER, FakeTokenizer
from test_sampling import LABELS, make, seeded

from argen.errors import ArgenError
from argen.model import KVCache, Transformer, TransformerConfig, autocast, check_compile, check_precision
from argen.orders import ORDERS, build_order
from argen.orders.base import Order, StepInputs
from argen.orders.scale import CoarseToFineOrder
from argen.pipeline import Pipeline
from argen.samplers import SAMPLERS, SamplingEngine, generate, generate_jacobi
from argen.samplers.logits import draw_by_cdf, final_distribution, sample
from argen.tokenizers import TokenizerConfig, build_tokenizer

TOKENIZER_FOR = {"raster": "vq", "neighbor": "fsq", "scale": "multiscale", "frequency": "frequency"}


def real_pipeline(name: str, *, seed: int = 0, width: int = 32, depth: int = 2) -> Pipeline:
    """A random-weight pipeline on a real tiny tokenizer (the running latent needs its compose_step)."""
    torch.manual_seed(seed)
    config = TokenizerConfig(
        kind=TOKENIZER_FOR[name], image_size=16, width=8, latent_dim=8, codebook_size=32, scales=[1, 2, 4]
    )
    tokenizer = build_tokenizer(config).eval()
    order = build_order(name, tokenizer)
    model = Transformer(
        TransformerConfig(width=width, depth=depth, heads=2, num_classes=3, **order.model_settings(tokenizer))
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return Pipeline(tokenizer, model.eval(), order, classes=["a", "b", "c"])


@pytest.fixture
def plain_loop(monkeypatch):
    """The loop before it was made lean: step inputs recomposed every step, nothing memoised in the cache, an
    explicit block-causal mask on every call, and decoding recomposing every grid."""

    def install() -> None:
        for order in (Order, CoarseToFineOrder):
            monkeypatch.setattr(order, "decoding_inputs", lambda self, tokenizer: StepInputs(self, tokenizer))
        monkeypatch.setattr(KVCache, "memo", property(lambda self: {}, lambda self, value: None), raising=False)
        # Nor anything kept across generations by the engine: every context and first call computed afresh.
        monkeypatch.setattr(SamplingEngine, "_start_key", lambda self, *args: None)
        fresh = lambda self, labels, batch, device, layout: self.model.context(labels, batch, device, layout)  # noqa: E731
        monkeypatch.setattr(SamplingEngine, "_kept_context", fresh)
        monkeypatch.setattr(KVCache, "last_step", property(lambda self: 10**9))

    return install


SETTINGS = [{}, {"cfg_scale": 2.0}, {"cfg_scale": 2.0, "cfg_schedule": "linear", "temperature": 0.8, "top_p": 0.9}]


@pytest.mark.parametrize("name", list(ORDERS))
def test_lean_loop_gives_the_plain_loops_ids_and_pixels_bit_for_bit(name, plain_loop):
    pipeline = real_pipeline(name)
    refiner = real_pipeline(name, seed=1, width=16, depth=1)
    refiner.tokenizer = pipeline.tokenizer
    runs = []
    for sampler in SAMPLERS:
        if sampler == "jacobi" or not SAMPLERS.info(sampler).supports(pipeline.order):
            continue  # SJD's draws are batched per call: its stream changed on purpose (docs/speed.md)
        options = {"refiner": refiner, "draft_steps": 2} if sampler == "collaborative" else {}
        for settings in SETTINGS:
            runs.append((sampler, settings, options))
    lean = [pipeline([0, 1, 2], seed=7, sampler=s, **settings, **options) for s, settings, options in runs]
    plain_loop()
    plain = [pipeline([0, 1, 2], seed=7, sampler=s, **settings, **options) for s, settings, options in runs]
    for (sampler, settings, _), first, second in zip(runs, lean, plain):
        assert all(torch.equal(a, b) for a, b in zip(first.ids, second.ids)), (sampler, settings)
        assert torch.equal(first.pixels, second.pixels), (sampler, settings)


@pytest.mark.parametrize("name", ["scale", "frequency"])
def test_running_latent_is_compose_bit_for_bit(name):
    pipeline = real_pipeline(name)
    tokenizer, order = pipeline.tokenizer, pipeline.order
    ids = [torch.randint(32, (3, h, w), generator=seeded(0)) for h, w in tokenizer.grid_shapes]
    inputs = order.decoding_inputs(tokenizer)
    for step in range(len(ids)):
        assert torch.equal(inputs(step, ids), order.step_inputs(step, ids, tokenizer))
    assert torch.equal(inputs.final_latent(ids), tokenizer.compose(ids, len(ids)))
    assert torch.equal(tokenizer.decode_latent(inputs.final_latent(ids)), tokenizer.decode(ids))


@pytest.mark.parametrize("name", list(ORDERS))
def test_memoised_context_and_unmasked_steps_match_the_full_forward_pass(name):
    order, tokenizer, model = make(name)
    layout = order.layout(tokenizer.grid_shapes)
    ids = tokenizer.random_ids(3)
    inputs, _ = order.train_inputs(ids, tokenizer)
    with torch.no_grad():  # no gradients and a cache: the sampling path, memo and all
        full = model(inputs, LABELS, layout=layout)
        cache = model.new_cache(3, capacity=layout.length)
        for step in range(layout.num_steps):
            index = layout.inputs_of_step[step]
            outputs = model(order.step_inputs(step, ids, tokenizer), LABELS, layout=layout, index=index, cache=cache)
            assert torch.allclose(outputs, full[:, index], atol=1e-5, rtol=1e-4)
        assert "context" in cache.memo
        # Other labels with the same cache are recomputed, not served from the memo.
        cache.rollback(0)
        other = torch.tensor([2, 2, 0])
        first = model(inputs[:, :1], other, layout=layout, index=torch.arange(1), cache=cache)
        assert torch.allclose(first, model(inputs, other, layout=layout)[:, :1], atol=1e-5, rtol=1e-4)


# -- draws ---------------------------------------------------------------------------------------------------------


def frequencies_p_value(draws: torch.Tensor, probs: torch.Tensor) -> float:
    observed = torch.bincount(draws.flatten(), minlength=probs.numel()).double()
    assert float(observed[probs == 0].sum()) == 0, "drew an id of probability 0"
    keep = probs > 0
    expected = probs[keep].double()
    expected = expected / expected.sum() * observed[keep].sum()
    return float(chisquare(observed[keep].numpy(), expected.numpy()).pvalue)


def test_top_k_draws_among_the_candidates_follow_the_filtered_distribution():
    logits = torch.tensor([0.3, 2.0, -1.0, 1.5, 0.0, 1.0, -3.0, 0.7])
    probs = final_distribution(logits, temperature=1.0, top_k=3, top_p=1.0)
    draws = sample(logits.expand(40000, 8), top_k=3, generator=seeded(0))
    assert frequencies_p_value(draws, probs) > 0.001
    assert frequencies_p_value(draws, logits.softmax(-1)) < 1e-6  # the test has power: unfiltered is rejected
    assert set(draws.unique().tolist()) == {1, 3, 5}


def test_top_k_keeps_ties_at_the_cut_as_the_filter_does():
    logits = torch.tensor([3.0, 1.0, 1.0, 0.0])  # top-2 with a tie for the second place keeps three ids
    probs = final_distribution(logits, temperature=1.0, top_k=2, top_p=1.0)
    assert int((probs > 0).sum()) == 3
    draws = sample(logits.expand(30000, 4), top_k=2, generator=seeded(0))
    assert frequencies_p_value(draws, probs) > 0.001
    assert set(draws.unique().tolist()) == {0, 1, 2}


def test_top_k_rows_rejected_twice_are_drawn_among_their_candidates():
    """Flat logits put ~3/40 of the mass on the top 3: most rows are rejected at both attempts and take the direct
    draw, the rest are accepted; all of them together must follow the filtered distribution."""
    logits = torch.linspace(0.0, 0.5, 40)
    probs = final_distribution(logits, temperature=1.0, top_k=3, top_p=1.0)
    draws = sample(logits.expand(30000, 40), top_k=3, generator=seeded(0))
    assert set(draws.unique().tolist()) == {37, 38, 39}
    assert frequencies_p_value(draws, probs) > 0.001
    assert frequencies_p_value(draws, torch.tensor([0.0] * 37 + [0.2, 0.3, 0.5])) < 1e-6  # the test has power
    mixed = torch.stack([logits, 8.0 * logits])  # one row mostly rejected, one mostly accepted, in one call
    draws = sample(mixed.expand(20000, 2, 40), top_k=3, generator=seeded(1))
    for row in range(2):
        expected = final_distribution(mixed[row], temperature=1.0, top_k=3, top_p=1.0)
        assert frequencies_p_value(draws[:, row], expected) > 0.001


@pytest.mark.parametrize("name", list(ORDERS))
def test_guidance_before_the_output_layers_equals_guiding_the_logits(name):
    """The engine guides the head-normed features before the model's (linear, bias-free) output layers: the same
    logits as guiding the 2B rows' logits, with one scale or one per position, cached or not."""
    order, tokenizer, model = make(name)
    engine = SamplingEngine(model)
    layout = order.layout(tokenizer.grid_shapes)
    inputs, _ = order.train_inputs(tokenizer.random_ids(3), tokenizer)
    labels = torch.cat([LABELS, torch.full_like(LABELS, 3)])
    doubled = torch.cat([inputs, inputs])
    per_position = 1.0 + torch.arange(layout.length, dtype=torch.float32) / layout.length
    with torch.no_grad():
        cond, uncond = model(doubled, labels, layout=layout).chunk(2)
        for scale in (2.5, per_position):
            shaped = scale if isinstance(scale, float) else scale.view(1, -1, *([1] * (cond.dim() - 2)))
            expected = uncond + shaped * (cond - uncond)
            guided = engine(doubled, labels, layout=layout, guidance=scale)
            assert guided.shape == expected.shape
            assert torch.allclose(guided, expected, atol=1e-5, rtol=1e-4)
        cache = model.new_cache(6, capacity=layout.length)
        expected = uncond + 2.5 * (cond - uncond)
        for step in range(layout.num_steps):
            index = layout.inputs_of_step[step]
            step_inputs = doubled[:, index]
            outputs = engine(step_inputs, labels, layout=layout, index=index, cache=cache, guidance=2.5)
            assert torch.allclose(outputs, expected[:, index], atol=1e-5, rtol=1e-4)
        with pytest.raises(ArgenError, match="2B rows"):
            engine(inputs, LABELS, layout=layout, guidance=2.0)


def test_inverse_cdf_draws_follow_the_distribution_and_never_pick_zero_probability():
    probs = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.3, 0.0])
    draws = draw_by_cdf(probs.expand(30000, 6), seeded(0))
    assert frequencies_p_value(draws, probs) > 0.001
    skewed = draw_by_cdf(torch.tensor([0.4, 0.6]).expand(30000, 2), seeded(0))
    assert frequencies_p_value(skewed, torch.tensor([0.6, 0.4])) < 1e-6  # the test can fail
    unnormalised = draw_by_cdf(torch.tensor([[0.0, 2.0, 0.0]]).expand(100, 3), seeded(1))
    assert bool((unnormalised == 1).all())


# -- --compile and --precision -------------------------------------------------------------------------------------


def test_compiled_training_step_and_cached_sampling_match_eager():
    order, tokenizer, model = make("scale")
    layout = order.layout(tokenizer.grid_shapes)
    ids = tokenizer.random_ids(3)
    inputs, targets = order.train_inputs(ids, tokenizer)
    model.train()
    model.config.class_dropout = 0.0

    def loss_and_grads():
        model.zero_grad()
        logits = model(inputs, LABELS, layout=layout)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        return loss.detach(), [parameter.grad.clone() for parameter in model.parameters()]

    eager_loss, eager_grads = loss_and_grads()
    model.compile()
    compiled_loss, compiled_grads = loss_and_grads()
    assert torch.allclose(compiled_loss, eager_loss, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(compiled_grads, eager_grads))
    model.eval()
    model.compile(False)
    engine = SamplingEngine(model).compile()
    compiled = generate(engine, order, tokenizer, labels=LABELS, cfg_scale=2.0, temperature=0.0)
    again = generate(engine, order, tokenizer, labels=LABELS, cfg_scale=2.0, temperature=0.0)  # kept first call
    eager = generate(engine.compile(False), order, tokenizer, labels=LABELS, cfg_scale=2.0, temperature=0.0)
    assert all(torch.equal(a, b) for a, b in zip(compiled.ids, eager.ids))
    assert all(torch.equal(a, b) for a, b in zip(again.ids, eager.ids))


def test_bf16_autocast_stays_close_to_fp32_and_keeps_the_sampler_equivalences():
    order, tokenizer, model = make("raster")
    layout = order.layout(tokenizer.grid_shapes)
    inputs, _ = order.train_inputs(tokenizer.random_ids(3), tokenizer)
    with torch.no_grad():
        reference = model(inputs, LABELS, layout=layout)
        with autocast("bf16", "cpu"):
            low = model(inputs, LABELS, layout=layout).float()
            cache = model.new_cache(3, capacity=layout.length)
            assert cache.keys.dtype == torch.bfloat16
            stepped = torch.cat(
                [model(inputs[:, s : s + 1], LABELS, layout=layout, index=torch.tensor([s]), cache=cache).float()
                 for s in range(layout.length)], dim=1,
            )  # fmt: skip
    scale = reference.abs().max()
    assert (low - reference).abs().max() < 0.05 * scale
    assert (stepped - low).abs().max() < 0.05 * scale  # KV-cached decoding ≈ the full pass, in bf16 too
    with autocast("bf16", "cpu"):
        plain = generate(model, order, tokenizer, labels=LABELS, cfg_scale=2.0, temperature=0.0)
        jacobi = generate_jacobi(model, order, tokenizer, labels=LABELS, cfg_scale=2.0, temperature=0.0, window=4)
        unguided = generate(model, order, tokenizer, labels=LABELS, generator=seeded(1))
        one = generate(model, order, tokenizer, labels=LABELS, cfg_scale=1.0, generator=seeded(1))
    assert torch.equal(jacobi.ids[0], plain.ids[0])
    assert torch.equal(unguided.ids[0], one.ids[0])


def test_pipeline_takes_compile_and_precision_and_refuses_what_cannot_run(monkeypatch):
    pipeline = real_pipeline("scale")
    bf16 = Pipeline(pipeline.tokenizer, pipeline.model, pipeline.order, precision="bf16")
    output = bf16([0, 1], seed=0, cfg_scale=2.0)
    assert [tuple(grid.shape) for grid in output.ids] == [(2, h, w) for h, w in pipeline.tokenizer.grid_shapes]
    with pytest.raises(ArgenError, match="unknown precision 'fp16'"):
        Pipeline(pipeline.tokenizer, pipeline.model, pipeline.order, precision="fp16")
    with pytest.raises(ArgenError, match="unknown precision"):
        check_precision("half", "cpu")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ArgenError, match="C compiler"):
        check_compile()
    with pytest.raises(ArgenError, match="C compiler"):
        Pipeline(pipeline.tokenizer, pipeline.model, pipeline.order, compile=True)


def test_speed_flags_reach_the_commands():
    from argen.cli import build_parser

    parser = build_parser()
    for command in (
        "sample --model M",
        "eval --model M --data fashion-mnist",
        "train --data fashion-mnist --tokenizer T --order raster --out O --steps 1",
    ):
        parsed = parser.parse_args([*command.split(), "--compile", "--precision", "bf16"])
        assert parsed.compile and parsed.precision == "bf16"
    with pytest.raises(SystemExit):
        parser.parse_args(["sample", "--model", "M", "--precision", "fp16"])


def test_shipped_models_load_and_sample_with_the_lean_loop():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "checkpoints" / "fashion-mnist"
    for name in ORDERS:
        if not (root / name / "generator").is_dir():
            continue
        pipeline = Pipeline.from_pretrained(root / name)
        output = pipeline([0], seed=0, cfg_scale=2.0, top_k=50)
        assert output.pixels.shape[0] == 1 and output.forward_passes >= 1


def test_var_reference_skips_without_a_checkout(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "var_reference.py"
    spec = importlib.util.spec_from_file_location("var_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--var-path", "/nonexistent/var"])
    assert "skipped" in capsys.readouterr().out


def test_fake_tokenizers_without_compose_step_still_decode(plain_loop):
    tokenizer = FakeTokenizer(KIND_FOR_ORDER["scale"])
    order = build_order("scale", tokenizer)
    assert not hasattr(tokenizer, "compose_step")
    ids = tokenizer.random_ids(2)
    inputs = order.decoding_inputs(tokenizer)
    assert inputs.final_latent(ids) is None
    assert torch.equal(inputs(2, ids), order.step_inputs(2, ids, tokenizer))


@pytest.mark.parametrize("name", list(ORDERS))
def test_span_inputs_and_positions_are_the_steps_concatenated(name):
    order, tokenizer, _ = make(name)
    layout = order.layout(tokenizer.grid_shapes)
    ids = tokenizer.random_ids(2)
    last_step = layout.num_steps - 1
    for first, last in [(0, 0), (0, last_step), (1, min(3, last_step)), (last_step, last_step)]:
        expected = torch.cat([order.step_inputs(step, ids, tokenizer) for step in range(first, last + 1)], dim=1)
        assert torch.equal(order.span_inputs(first, last, ids, tokenizer), expected)
        assert torch.equal(order.decoding_inputs(tokenizer).span(first, last, ids), expected)
        assert torch.equal(layout.inputs_of_steps(first, last), torch.cat(layout.inputs_of_step[first : last + 1]))


def test_pipeline_outputs_leave_inference_mode_and_training_still_works_after_sampling():
    pipeline = real_pipeline("raster")
    pipeline.order._layouts.clear()  # the layout is first built inside the pipeline's inference mode
    output = pipeline([0, 1], seed=0, return_intermediates=True)
    output.ids[0][0, 0, 0] = 1  # ordinary tensors: in-place edits work
    output.pixels[0] = 0
    output.intermediate_pixels[0][0] = 0
    model, order, tokenizer = pipeline.model.train(), pipeline.order, pipeline.tokenizer
    layout = order.layout(tokenizer.grid_shapes)
    assert not layout.step_of.is_inference()
    inputs, targets = order.train_inputs(output.ids, tokenizer)
    logits = model(inputs, torch.tensor([0, 1]), layout=layout)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    assert model.token_embed.weight.grad is not None


@pytest.mark.parametrize("name", list(ORDERS))
def test_every_orders_scatter_writes_what_the_generic_scatter_writes(name):
    order, tokenizer, _ = make(name)
    layout = order.layout(tokenizer.grid_shapes)
    ids = tokenizer.random_ids(2)
    for step in range(layout.num_steps):
        sampled = torch.randint(16, (2, len(layout.targets_of_step[step])), generator=seeded(step))
        expected = Order.scatter(order, [grid.clone() for grid in ids], step, sampled)
        got = order.scatter([grid.clone() for grid in ids], step, sampled)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
        ids = got


def test_fit_trains_under_bf16_and_resumes_across_speed_settings(tmp_path):
    from test_train import make_task, training

    from argen.train import fit

    first = fit(make_task(), training(tmp_path, steps=6, precision="bf16"))
    assert first.step == 6 and first.reason == "finished"
    # --compile and --precision may change between a run and its resume (they do not change the experiment).
    resumed = fit(make_task(), training(tmp_path, steps=8, precision="fp32"))
    assert resumed.step == 8
    with pytest.raises(ArgenError, match="unknown precision"):
        fit(make_task(), training(tmp_path / "other", precision="fp8"))


def same_ids(first, second) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.ids, second.ids, strict=True))


def test_context_kept_across_generations_is_recomputed_when_the_weights_change():
    """The engine reuses a generation's class context for the next one with the same labels and layout; after its
    owner says the weights changed (`invalidate`), it samples what a fresh engine samples. Without being told it
    would reuse the old context: the reuse is real, and telling it is what keeps it right."""
    order, tokenizer, model = make("scale")
    engine = SamplingEngine(model)
    options = dict(labels=LABELS, cfg_scale=2.0, temperature=0.0)
    first = generate(engine, order, tokenizer, **options)
    assert len(engine._contexts) == 1
    assert same_ids(first, generate(engine, order, tokenizer, **options))
    changed = {name: tensor + 0.5 * torch.randn_like(tensor) for name, tensor in model.state_dict().items()}
    model.load_state_dict(changed)
    stale = generate(engine, order, tokenizer, **options)
    expected = generate(model, order, tokenizer, **options)  # a bare model: a fresh engine
    assert not same_ids(stale, expected)  # the kept context and first call are the old weights'
    engine.invalidate()
    assert same_ids(generate(engine, order, tokenizer, **options), expected)
    # A context computed in fp32 is not served to a bf16 generation (nor the reverse): each has its own.
    kept = len(engine._contexts)
    with autocast("bf16", "cpu"):
        low = generate(engine, order, tokenizer, **options)
        assert same_ids(low, generate(model, order, tokenizer, **options))
    assert len(engine._contexts) == kept + 1


def test_pipeline_invalidates_its_engine_when_its_weights_change():
    pipeline = real_pipeline("scale")
    first = pipeline([0, 1], seed=0, cfg_scale=2.0)
    assert pipeline.engine._contexts and pipeline.engine._starts
    pipeline.to("cpu")
    assert not pipeline.engine._contexts and not pipeline.engine._starts
    with torch.no_grad():
        pipeline.model.class_embed.weight.mul_(-3.0)
    pipeline.weights_changed()
    changed = pipeline([0, 1], seed=0, cfg_scale=2.0)
    fresh = Pipeline(pipeline.tokenizer, pipeline.model, pipeline.order)([0, 1], seed=0, cfg_scale=2.0)
    assert same_ids(changed, fresh) and not same_ids(changed, first)


REQUESTS = [
    dict(labels=LABELS, cfg_scale=2.0),
    dict(labels=LABELS.flip(0), cfg_scale=2.0),
    dict(labels=LABELS, cfg_scale=3.0),
    dict(labels=LABELS, cfg_scale=3.0, cfg_schedule="linear"),
    dict(labels=LABELS, cfg_scale=1.0),
    dict(labels=LABELS[:2], cfg_scale=2.0),
    dict(batch_size=3),
    dict(labels=LABELS, cfg_scale=2.0),
]


@pytest.mark.parametrize("name", list(ORDERS))
def test_one_engine_across_requests_samples_what_fresh_engines_sample(name):
    """Requests that differ in labels, guidance, schedule and batch, through one engine (its kept contexts and first
    calls keyed by them) and each through a fresh one: bit-identical ids. Wrong keys would serve one request another's
    context or first call."""
    order, tokenizer, model = make(name)
    engine = SamplingEngine(model)
    for sampler in SAMPLERS:
        if not SAMPLERS.info(sampler).supports(order):
            continue
        options = {"refiner": model, "draft_steps": 2} if sampler == "collaborative" else {}
        for seed, request in enumerate(REQUESTS):
            if request.get("labels") is None and model.config.num_classes and request.get("cfg_scale", 1.0) != 1.0:
                continue
            kept = SAMPLERS[sampler](engine, order, tokenizer, generator=seeded(seed), **request, **options)
            fresh = SAMPLERS[sampler](model, order, tokenizer, generator=seeded(seed), **request, **options)
            assert same_ids(kept, fresh), (sampler, request)
    assert len(engine._starts) > 1 and len(engine._contexts) > 1


@pytest.mark.parametrize("name", ["raster", "scale", "neighbor"])
def test_first_call_kept_across_generations_is_the_same_call(name):
    """A generation's first call (step 0 only: start tokens) is kept by the engine and served to the next generation
    with the same labels and guidance: the same outputs and cache contents bit for bit, without the call; other
    labels, other guidance or other step-0 ids are computed afresh, and nothing is kept outside sampling."""
    from argen.samplers.base import feed, prepare_request

    order, tokenizer, model = make(name)
    engine = SamplingEngine(model)
    layout = order.layout(tokenizer.grid_shapes)
    calls = []
    body = engine._body
    engine._body = lambda *arguments: calls.append(1) or body(*arguments)

    def first_call(labels=LABELS, cfg_scale=2.0):
        request = prepare_request(model, order, tokenizer, labels=labels, cfg_scale=cfg_scale)
        cache = engine.new_cache(request.rows, capacity=layout.length)
        with torch.inference_mode():
            outputs = feed(engine, order, tokenizer, request, request.empty_ids(), first=0, last=0, cache=cache)
        return outputs, cache.keys[:, :, :, : cache.length], cache.values[:, :, :, : cache.length]

    computed = first_call()
    served = first_call()
    assert len(calls) == 1 and len(engine._starts) == 1
    assert all(torch.equal(a, b) for a, b in zip(computed, served, strict=True))
    engine.invalidate()
    assert all(torch.equal(a, b) for a, b in zip(computed, first_call(), strict=True)) and len(calls) == 2
    first_call(labels=LABELS.flip(0))
    assert len(calls) == 3  # other labels: another key
    first_call(cfg_scale=3.0)
    assert len(calls) == 4  # other guidance: another key
    if order.input_kind != "features":  # ids at step 0 are part of the key (features are replaced by start)
        request = prepare_request(model, order, tokenizer, labels=LABELS, cfg_scale=2.0)
        index = layout.inputs_of_step[0]
        for start in (model.config.vocab_size, 0):
            cache = engine.new_cache(request.rows, capacity=layout.length)
            with torch.inference_mode():
                engine(torch.full((request.rows, len(index)), start), request.labels, layout=layout, index=index,
                       cache=cache, guidance=2.0)  # fmt: skip
        assert len(calls) == 5  # the start token is what first_call fed (served); id 0 is another key
    model.train()  # nothing is kept outside sampling
    kept = len(engine._starts)
    first_call()
    first_call()
    assert len(engine._starts) == kept


def test_keep_freed_memory_stops_page_faults_in_a_repeated_step():
    """With glibc's thresholds raised, a loop that allocates the same large tensors every step reuses freed memory
    (few page faults after warm-up) instead of faulting through fresh pages at every step."""
    import platform
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    script = (
        "import resource, sys, torch\n"
        "from argen.allocator import keep_freed_memory\n"
        "if sys.argv[1] == '1': assert keep_freed_memory()\n"
        "faults = []\n"
        "for step in range(8):\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    x = torch.randn(40000, 256)\n"  # 41 MB: above glibc's largest automatic threshold
        "    y = torch.cat([x, x.relu()], 1)\n"
        "    del x, y\n"
        "    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
        "print(sum(faults[4:]))\n"
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    counts = [
        int(subprocess.run([sys.executable, "-c", script, flag], capture_output=True, text=True, check=True,
                           env=environment).stdout)
        for flag in ("0", "1")
    ]  # fmt: skip
    assert counts[0] > 4 * 20000  # each of the last 4 steps faults through ~40 000 fresh pages by default
    assert counts[1] < counts[0] / 2


def test_keep_freed_memory_leaves_a_users_own_setting(monkeypatch):
    from argen import allocator

    monkeypatch.setattr(allocator, "_set", False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert allocator.keep_freed_memory() is False
