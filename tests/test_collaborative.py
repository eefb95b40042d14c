"""Collaborative decoding tests: equivalence with plain decoding at both ends of the split and with the refiner being
the drafter, the refiner's prefill and KV cache against teacher forcing, refusals, Pipeline and CLI end to end."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from test_sampling import NUM_CLASSES, make

from argen.cli import run
from argen.errors import ArgenError
from argen.model import Transformer, TransformerConfig
from argen.orders import build_order
from argen.pipeline import Pipeline
from argen.samplers import SAMPLERS, SamplingEngine, generate, generate_collaborative
from argen.samplers.logits import cfg_scale_at, guide
from argen.tokenizers import TokenizerConfig, build_tokenizer

LABELS = torch.tensor([0, 1, 2])
ORDERS = ["scale", "frequency"]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_refiner(order, tokenizer, *, seed: int = 1, **overrides) -> Transformer:
    """A narrower, shallower model than `make`'s for the same order and tokenizer, with other random weights."""
    torch.manual_seed(seed)
    settings = {**order.model_settings(tokenizer), **overrides}
    config = TransformerConfig(width=16, depth=1, heads=2, num_classes=NUM_CLASSES, **settings)
    model = Transformer(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def same_ids(first, second) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first, second))


SETTINGS = [
    pytest.param(dict(cfg_scale=1.0, temperature=1.0), id="unguided-T1"),
    pytest.param(dict(cfg_scale=2.0, temperature=1.0), id="cfg2-T1"),
    pytest.param(dict(cfg_scale=3.0, cfg_schedule="linear", temperature=1.0, top_k=20), id="linear-cfg-top-k"),
    pytest.param(dict(cfg_scale=1.0, temperature=0.0), id="unguided-greedy"),
    pytest.param(dict(cfg_scale=2.0, temperature=0.0), id="cfg2-greedy"),
]


# -- equivalence with plain decoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ORDERS)
@pytest.mark.parametrize("settings", SETTINGS)
def test_refiner_equal_to_the_drafter_gives_plain_decoding_for_every_split(name, settings):
    order, tokenizer, model = make(name)
    num_steps = order.layout(tokenizer.grid_shapes).num_steps
    plain = generate(model, order, tokenizer, labels=LABELS, generator=seeded(7), **settings)
    for draft_steps in range(num_steps + 1):
        output = generate_collaborative(
            model, order, tokenizer, refiner=model, draft_steps=draft_steps, labels=LABELS, generator=seeded(7),
            **settings,
        )  # fmt: skip
        assert same_ids(output.ids, plain.ids), draft_steps
        assert output.forward_passes == num_steps
        assert output.passes_by_model == {"drafter": draft_steps, "refiner": num_steps - draft_steps}


@pytest.mark.parametrize("name", ORDERS)
@pytest.mark.parametrize("settings", SETTINGS)
def test_both_ends_of_the_split_are_one_model_alone_and_the_drafted_steps_are_plain_decoding(name, settings):
    order, tokenizer, model = make(name)
    refiner = small_refiner(order, tokenizer)
    num_steps = order.layout(tokenizer.grid_shapes).num_steps
    large = generate(model, order, tokenizer, labels=LABELS, generator=seeded(3), **settings)
    small = generate(refiner, order, tokenizer, labels=LABELS, generator=seeded(3), **settings)
    assert not same_ids(large.ids, small.ids)  # the two models differ, so the splits below tell them apart

    def collaborative(draft_steps):
        return generate_collaborative(
            model, order, tokenizer, refiner=refiner, draft_steps=draft_steps, labels=LABELS, generator=seeded(3),
            **settings,
        )  # fmt: skip

    assert same_ids(collaborative(num_steps).ids, large.ids)
    assert same_ids(collaborative(0).ids, small.ids)
    for draft_steps in range(1, num_steps):
        # The drafter's steps draw from the generator exactly as plain decoding does: the same grids.
        output = collaborative(draft_steps)
        assert same_ids(output.ids[:draft_steps], large.ids[:draft_steps]), draft_steps


# -- the refiner's prefill and cache ---------------------------------------------------------------------------------


def teacher_forced_logits(model, order, tokenizer, ids, *, cfg_scale: float, cfg_schedule: str):
    """(B, L, V) guided logits of ``model`` on the whole sequence built from ``ids`` in one uncached pass."""
    layout = order.layout(tokenizer.grid_shapes)
    inputs, _ = order.train_inputs(ids, tokenizer)
    labels = torch.cat([LABELS, torch.full_like(LABELS, NUM_CLASSES)])
    cond, uncond = order.logits(model(torch.cat([inputs, inputs]), labels, layout=layout), layout).chunk(2)
    scales = [
        cfg_scale_at(int(step), layout.num_steps, cfg_scale=cfg_scale, schedule=cfg_schedule) for step in layout.step_of
    ]
    return guide(cond, uncond, torch.tensor(scales)[None, :, None])  # each position at its own step's scale


@pytest.mark.parametrize("name", ORDERS)
def test_greedy_ids_are_each_models_argmax_on_the_drafted_prefix(name):
    order, tokenizer, model = make(name)
    refiner = small_refiner(order, tokenizer)
    layout = order.layout(tokenizer.grid_shapes)
    options = dict(labels=LABELS, cfg_scale=2.5, cfg_schedule="linear", temperature=0.0)
    for draft_steps in range(1, layout.num_steps):
        output = generate_collaborative(model, order, tokenizer, refiner=refiner, draft_steps=draft_steps, **options)
        targets = order.targets(output.ids)
        forced = {
            network: teacher_forced_logits(network, order, tokenizer, output.ids, cfg_scale=2.5, cfg_schedule="linear")
            for network in (model, refiner)
        }
        for step in range(layout.num_steps):
            # Steps before the hand-over are the drafter's argmax, the rest the refiner's, given the ids before them.
            network = model if step < draft_steps else refiner
            where = layout.targets_of_step[step]
            assert torch.equal(forced[network][:, where].argmax(dim=-1), targets[:, where]), (draft_steps, step)


class RecordedCalls(SamplingEngine):
    """An engine that records every call's fed positions and outputs."""

    def __init__(self, model):
        super().__init__(model)
        self.calls = []

    def __call__(self, inputs, labels, **options):
        outputs = super().__call__(inputs, labels, **options)
        self.calls.append((options["index"], outputs.clone()))
        return outputs


@pytest.mark.parametrize("name", ORDERS)
def test_refiner_prefill_and_cache_give_its_teacher_forced_outputs(name):
    """Every refiner call (the one-pass prefill of the drafted prefix, then one call per step with its cache) gives
    the outputs of one uncached pass of the refiner over the final sequence, at sampled temperature 1."""
    order, tokenizer, model = make(name)
    refiner = small_refiner(order, tokenizer)
    layout = order.layout(tokenizer.grid_shapes)
    recorded = RecordedCalls(refiner)
    draft_steps = 2
    output = generate_collaborative(
        model, order, tokenizer, refiner=recorded, draft_steps=draft_steps, labels=LABELS, cfg_scale=2.0,
        generator=seeded(5),
    )  # fmt: skip
    calls = recorded.calls
    prefix = torch.cat(layout.inputs_of_step[: draft_steps + 1])
    assert torch.equal(calls[0][0], prefix)  # the prefill: steps 0 .. N in one call
    assert [index.tolist() for index, _ in calls[1:]] == [
        layout.inputs_of_step[step].tolist() for step in range(draft_steps + 1, layout.num_steps)
    ]
    inputs, _ = order.train_inputs(output.ids, tokenizer)
    labels = torch.cat([LABELS, torch.full_like(LABELS, NUM_CLASSES)])
    full = SamplingEngine(refiner)(torch.cat([inputs, inputs]), labels, layout=layout, guidance=2.0)  # guided
    for index, outputs in calls:
        assert torch.allclose(outputs, full[:, index], atol=1e-5)


# -- refusals and bookkeeping --------------------------------------------------------------------------------------


def test_refusals():
    order, tokenizer, model = make("scale")
    num_steps = order.layout(tokenizer.grid_shapes).num_steps

    def run_with(refiner=model, draft_steps=1, the_order=order, the_model=model, the_tokenizer=tokenizer):
        generate_collaborative(
            the_model, the_order, the_tokenizer, refiner=refiner, draft_steps=draft_steps, labels=LABELS
        )

    raster_order, raster_tokenizer, raster_model = make("raster")
    with pytest.raises(ArgenError, match="scale and frequency orders, not 'raster'"):
        run_with(raster_model, the_order=raster_order, the_model=raster_model, the_tokenizer=raster_tokenizer)
    with pytest.raises(ArgenError, match="refiner was not built for this drafter's order and tokenizer"):
        run_with(raster_model)  # a model of ids, not of scale features
    vocabulary = order.model_settings(tokenizer)["vocab_size"]
    with pytest.raises(ArgenError, match=f"vocab_size={vocabulary + 1}"):
        run_with(small_refiner(order, tokenizer, vocab_size=vocabulary + 1))
    other_classes = small_refiner(order, tokenizer)
    other_classes.class_embed = torch.nn.Embedding(NUM_CLASSES + 3, 16)
    other_classes.config = dataclasses.replace(other_classes.config, num_classes=NUM_CLASSES + 2)
    with pytest.raises(ArgenError, match="refiner has 5 classes, the drafter 3"):
        run_with(other_classes)
    for wrong in (-1, num_steps + 1, 1.0, True, None):
        with pytest.raises(ArgenError, match=f"draft_steps must be a whole number from 0 .* to {num_steps}"):
            run_with(draft_steps=wrong)


def test_registry_training_mode_and_plain_samplers_unchanged():
    assert SAMPLERS["collaborative"] is generate_collaborative
    order, tokenizer, model = make("frequency")
    refiner = small_refiner(order, tokenizer)
    model.train(), refiner.train()
    generate_collaborative(model, order, tokenizer, refiner=refiner, draft_steps=1, labels=LABELS)
    assert model.training and refiner.training  # put back as found
    assert generate(model.eval(), order, tokenizer, labels=LABELS).passes_by_model is None


# -- Pipeline and CLI ----------------------------------------------------------------------------------------------


def save_model_directory(directory, tokenizer, order_name: str, *, width: int, depth: int, seed: int) -> None:
    order = build_order(order_name, tokenizer)
    torch.manual_seed(seed)
    config = TransformerConfig(width=width, depth=depth, heads=2, num_classes=3, **order.model_settings(tokenizer))
    model = Transformer(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    Pipeline(tokenizer, model.eval(), order, classes=["zero", "one", "two"]).save_pretrained(directory)


def tiny_tokenizer(kind: str, seed: int):
    torch.manual_seed(seed)
    config = TokenizerConfig(kind=kind, image_size=16, width=8, latent_dim=8, codebook_size=32, scales=[1, 2, 4])
    return build_tokenizer(config).eval()


@pytest.fixture(scope="module")
def model_directories(tmp_path_factory):
    """Random-weight model directories: a drafter and a refiner on one frequency tokenizer, a refiner on another
    frequency tokenizer, and a scale-order one."""
    root = tmp_path_factory.mktemp("collaborative")
    tokenizer = tiny_tokenizer("frequency", seed=0)
    save_model_directory(root / "drafter", tokenizer, "frequency", width=32, depth=2, seed=0)
    save_model_directory(root / "refiner", tokenizer, "frequency", width=16, depth=1, seed=1)
    save_model_directory(root / "stranger", tiny_tokenizer("frequency", seed=1), "frequency", width=16, depth=1, seed=2)
    save_model_directory(root / "scale", tiny_tokenizer("multiscale", seed=0), "scale", width=16, depth=1, seed=3)
    return root


def test_pipeline_takes_a_refiner_pipeline_or_directory(model_directories):
    drafter = Pipeline.from_pretrained(model_directories / "drafter")
    refiner = Pipeline.from_pretrained(model_directories / "refiner")
    assert drafter.tokenizer_fingerprint == refiner.tokenizer_fingerprint is not None
    options = dict(labels=[0, "two", 1], cfg_scale=2.0, seed=4)
    by_pipeline = drafter(**options, sampler="collaborative", refiner=refiner, draft_steps=1)
    by_directory = drafter(
        **options, sampler="collaborative", refiner=model_directories / "refiner", draft_steps=1,
        return_intermediates=True,
    )  # fmt: skip
    assert same_ids(by_pipeline.ids, by_directory.ids)
    assert by_directory.passes_by_model == {"drafter": 1, "refiner": 2} and by_directory.forward_passes == 3
    assert len(by_directory.intermediates) == 3 and len(by_directory.images) == 3
    assert np.array_equal(np.asarray(by_directory.intermediates[-1][1]), np.asarray(by_directory.images[1]))
    # The ends of the split: the refiner alone, the drafter alone.
    small = refiner(**options)
    assert same_ids(drafter(**options, sampler="collaborative", refiner=refiner, draft_steps=0).ids, small.ids)
    large = drafter(**options)
    assert large.passes_by_model is None
    assert same_ids(drafter(**options, sampler="collaborative", refiner=refiner, draft_steps=3).ids, large.ids)


def test_pipeline_refuses_a_refiner_of_another_tokenizer_or_order(model_directories):
    drafter = Pipeline.from_pretrained(model_directories / "drafter")
    with pytest.raises(ArgenError, match="refiner was trained on another tokenizer"):
        drafter([0], sampler="collaborative", refiner=model_directories / "stranger", draft_steps=1)
    with pytest.raises(ArgenError, match="refiner generates in 'scale' order and this model in 'frequency'"):
        drafter([0], sampler="collaborative", refiner=model_directories / "scale", draft_steps=1)
    with pytest.raises(ArgenError, match="collaborative sampler needs refiner="):
        drafter([0], sampler="collaborative", draft_steps=1)
    with pytest.raises(ArgenError, match="collaborative sampler needs refiner="):
        drafter([0], sampler="collaborative", refiner=model_directories / "refiner")


def test_pipelines_built_in_memory_compare_tokenizer_weights():
    drafter_tokenizer = tiny_tokenizer("frequency", seed=0)
    order = build_order("frequency", drafter_tokenizer)
    _, _, model = make("frequency")  # any frequency-order transformer fits this check; the sampler is not reached
    drafter = Pipeline(drafter_tokenizer, model, order)
    twin = Pipeline(copy.deepcopy(drafter_tokenizer), model, order)
    stranger = Pipeline(tiny_tokenizer("frequency", seed=1), model, order)
    assert drafter.refiner_engine(twin) is twin.engine and twin.engine.model is model
    with pytest.raises(ArgenError, match="another tokenizer"):
        drafter.refiner_engine(stranger)


def test_cli_sample_collaborative(model_directories, tmp_path, capsys):
    npz = tmp_path / "samples.npz"
    run([
        "sample", "--model", str(model_directories / "drafter"), "--labels", "0,2", "--per-label", "2",
        "--cfg-scale", "2", "--seed", "6", "--out", str(tmp_path / "grid.png"), "--save-npz", str(npz),
        "--sampler", "collaborative", "--refiner", str(model_directories / "refiner"), "--draft-steps", "2",
    ])  # fmt: skip
    assert "3 forward passes per batch (drafter 2, refiner 1)" in capsys.readouterr().out
    direct = Pipeline.from_pretrained(model_directories / "drafter")(
        [0, 0, 2, 2], cfg_scale=2, seed=6, sampler="collaborative", refiner=model_directories / "refiner",
        draft_steps=2,
    )  # fmt: skip
    assert np.array_equal(np.load(npz)["images"], direct.pixels[:, 0].numpy())

    model = ["sample", "--model", str(model_directories / "drafter"), "--out", str(tmp_path / "x.png")]
    with pytest.raises(ArgenError, match="--sampler collaborative needs --refiner DIR"):
        run([*model, "--sampler", "collaborative", "--refiner", str(model_directories / "refiner")])
    with pytest.raises(ArgenError, match="--refiner and --draft-steps go with --sampler collaborative"):
        run([*model, "--refiner", str(model_directories / "refiner"), "--draft-steps", "1"])
    with pytest.raises(ArgenError, match="--window is an option of --sampler jacobi"):
        run([*model, "--window", "4"])
    with pytest.raises(SystemExit):
        run(["sample", "--help"])
    help_text = capsys.readouterr().out
    assert "--refiner DIR" in help_text and "--draft-steps N" in help_text and "collaborative" in help_text
