"""Transformer tests: no leakage across steps, KV-cache equivalence, rollback, presets, class dropout."""

from __future__ import annotations

import copy

import pytest
import torch
from test_orders import KIND_FOR_ORDER, FakeTokenizer, ids_of_steps

from argen.errors import ArgenError
from argen.model import PRESETS, Transformer, TransformerConfig, preset_config
from argen.orders import ORDERS, build_order

NUM_CLASSES = 3


def make(name: str, *, adaln: bool = True, seed: int = 0):
    tokenizer = FakeTokenizer(KIND_FOR_ORDER[name])
    order = build_order(name, tokenizer)
    torch.manual_seed(seed)
    model = Transformer(preset_config("tiny", num_classes=NUM_CLASSES, adaln=adaln, **order.model_settings(tokenizer)))
    # Away from the zero-initialised AdaLN so that the class modulates every block in these tests.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return order, tokenizer, order.layout(tokenizer.grid_shapes), model.eval()


def full_logits(order, tokenizer, layout, model, ids, labels):
    inputs, _ = order.train_inputs(ids, tokenizer)
    return order.logits(model(inputs, labels, layout=layout), layout)  # (B, L, V)


@pytest.mark.parametrize("name", list(ORDERS))
def test_changing_a_step_changes_no_logits_of_earlier_steps(name):
    order, tokenizer, layout, model = make(name)
    ids = tokenizer.random_ids(2)
    labels = torch.tensor([0, 2])
    before = full_logits(order, tokenizer, layout, model, ids, labels)
    for step in range(1, layout.num_steps - 1):
        changed = ids_of_steps(order, layout, ids, [step], seed=step)
        after = full_logits(order, tokenizer, layout, model, changed, labels)
        upto = torch.cat(layout.targets_of_step[: step + 1])  # targets of steps ≤ step
        later = torch.cat(layout.targets_of_step[step + 1 :])
        assert torch.allclose(after[:, upto], before[:, upto], atol=1e-6)
        assert not torch.allclose(after[:, later], before[:, later], atol=1e-4)  # the test can see a change


@pytest.mark.parametrize("adaln", [True, False])
@pytest.mark.parametrize("name", list(ORDERS))
def test_kv_cached_decoding_equals_the_full_forward_pass(name, adaln):
    order, tokenizer, layout, model = make(name, adaln=adaln)
    ids = tokenizer.random_ids(2)
    labels = torch.tensor([1, 3])  # 3 is the null class
    full = full_logits(order, tokenizer, layout, model, ids, labels)
    cache = model.new_cache(2, capacity=layout.length)
    for step in range(layout.num_steps):
        inputs = order.step_inputs(step, ids, tokenizer)
        outputs = model(inputs, labels, layout=layout, index=layout.inputs_of_step[step], cache=cache)
        logits = order.logits(outputs, layout, step)
        assert torch.allclose(logits, full[:, layout.targets_of_step[step]], atol=1e-5, rtol=1e-4)
    assert cache.length == layout.length


def test_cache_rollback_equals_a_cache_of_the_first_positions():
    order, tokenizer, layout, model = make("scale")
    ids = tokenizer.random_ids(2)
    labels = torch.tensor([0, 1])
    inputs, _ = order.train_inputs(ids, tokenizer)
    n = int(layout.inputs_of_step[2][0])  # positions of steps 0 and 1
    whole = model.new_cache(2, capacity=layout.length)
    model(inputs, labels, layout=layout, cache=whole)
    whole.rollback(n)
    prefix = model.new_cache(2, capacity=layout.length)
    model(inputs[:, :n], labels, layout=layout, cache=prefix)
    assert whole.length == prefix.length == n
    assert torch.allclose(whole.keys[..., :n, :], prefix.keys[..., :n, :], atol=1e-6)
    assert torch.allclose(whole.values[..., :n, :], prefix.values[..., :n, :], atol=1e-6)
    assert torch.equal(whole.steps[:n], prefix.steps[:n])
    rest = torch.arange(n, layout.length)
    again = model(inputs[:, n:], labels, layout=layout, index=rest, cache=whole)
    fresh = model(inputs[:, n:], labels, layout=layout, index=rest, cache=prefix)
    assert torch.allclose(again, fresh, atol=1e-6)
    assert torch.allclose(again, model(inputs, labels, layout=layout)[:, n:], atol=1e-5)
    with pytest.raises(ArgenError):
        whole.rollback(layout.length + 1)


def test_cache_refuses_overflow():
    order, tokenizer, layout, model = make("raster")
    inputs, _ = order.train_inputs(tokenizer.random_ids(1), tokenizer)
    cache = model.new_cache(1, capacity=3)
    with pytest.raises(ArgenError, match="KV cache holds 3"):
        model(inputs, None, layout=layout, cache=cache)
    assert cache.length == 0


@pytest.mark.parametrize(
    ("name", "stated", "vocab"), [("tiny", 50e3, 64), ("1m", 1e6, 1024), ("3m", 3e6, 1024), ("10m", 10e6, 1024)]
)
def test_presets_have_about_the_stated_parameter_counts(name, stated, vocab):
    model = Transformer(preset_config(name, vocab_size=vocab, num_classes=10))
    count = sum(parameter.numel() for parameter in model.parameters())
    assert 0.85 * stated <= count <= 1.15 * stated, count


def test_unknown_preset_and_bad_configs_are_refused():
    assert set(PRESETS) == {"tiny", "1m", "3m", "10m"}
    with pytest.raises(ArgenError, match="unknown transformer preset"):
        preset_config("huge")
    with pytest.raises(ArgenError, match="not divisible"):
        TransformerConfig(width=30, heads=4)
    order, tokenizer, layout, _ = make("raster")
    small = Transformer(TransformerConfig(width=16, depth=1, heads=2, vocab_size=16, max_steps=8, max_grid=4))
    inputs, _ = order.train_inputs(tokenizer.random_ids(1), tokenizer)
    with pytest.raises(ArgenError, match="max_steps=8"):
        small(inputs, layout=layout)
    with pytest.raises(ArgenError, match="does not fit order"):
        order.check_model(small.config, tokenizer)
    with pytest.raises(ArgenError, match="features"):
        Transformer(TransformerConfig(width=16, heads=2, feature_dim=4))(inputs, layout=layout)


def test_class_dropout_only_in_training():
    order, tokenizer, layout, model = make("raster")
    model.config.class_dropout = 0.5
    ids = tokenizer.random_ids(64)
    labels = torch.randint(0, NUM_CLASSES, (64,), generator=torch.Generator().manual_seed(0))
    inputs, _ = order.train_inputs(ids, tokenizer)
    conditional = model(inputs, labels, layout=layout)
    null = model(inputs, torch.full_like(labels, NUM_CLASSES), layout=layout)
    assert torch.equal(model(inputs, labels, layout=layout), conditional)  # eval: deterministic, no dropping
    model.train()
    torch.manual_seed(0)
    trained = model(inputs, labels, layout=layout)
    dropped = torch.tensor([torch.allclose(trained[i], null[i], atol=1e-6) for i in range(64)])
    kept = torch.tensor([torch.allclose(trained[i], conditional[i], atol=1e-6) for i in range(64)])
    assert bool((dropped ^ kept).all())  # every example is either conditional or null
    assert 10 <= int(dropped.sum()) <= 54
    model.eval()
    assert torch.equal(model(inputs, labels, layout=layout), conditional)


def test_labels_are_checked():
    order, tokenizer, layout, model = make("raster")
    inputs, _ = order.train_inputs(tokenizer.random_ids(2), tokenizer)
    with pytest.raises(ArgenError, match=r"labels must lie in \[0, 3\]"):
        model(inputs, torch.tensor([0, 4]), layout=layout)
    unconditional = Transformer(TransformerConfig(width=16, heads=2, vocab_size=16, max_steps=16, max_grid=4))
    with pytest.raises(ArgenError, match="unconditional"):
        unconditional(inputs, torch.tensor([0, 1]), layout=layout)
    assert unconditional(inputs, layout=layout).shape == (2, 16, 16)


def test_output_shapes_and_heads():
    order, tokenizer, layout, model = make("neighbor")
    inputs, targets = order.train_inputs(tokenizer.random_ids(2), tokenizer)
    outputs = model(inputs, torch.tensor([0, 1]), layout=layout)
    assert outputs.shape == (2, layout.length, 2, 16)
    assert order.logits(outputs, layout).shape == (2, layout.length, 16) == (*targets.shape, 16)
    order, tokenizer, layout, model = make("scale")
    inputs, _ = order.train_inputs(tokenizer.random_ids(2), tokenizer)
    assert inputs.shape == (2, layout.length, 4)
    assert model(inputs, torch.tensor([0, 1]), layout=layout).shape == (2, layout.length, 16)


def test_grids_of_different_sizes_share_the_position_table_by_cell_centre():
    _, _, layout, model = make("scale")  # grids 1, 2, 3, 4 on a max_grid 4 table
    positions, sizes = layout.positions, layout.sizes
    table = model.config.max_grid
    rows = (2 * positions[:, 1] + 1) * table // (2 * sizes[:, 0])
    assert rows[0] == 2  # the 1×1 grid sits at the centre
    last = layout.inputs_of_step[-1]
    assert torch.equal(rows[last], positions[last, 1])  # the largest grid maps one to one
    assert bool((rows < table).all())


def test_checkpoints_with_the_old_parameter_names_load(tmp_path):
    """A shipped Fashion-MNIST model rewritten with the names of earlier releases (the output layers were ``heads``)
    loads with every tensor in place, like the checkpoints shipped before the rename."""
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from argen import Pipeline

    shipped = Path(__file__).resolve().parent.parent / "checkpoints" / "fashion-mnist"
    for name in ORDERS:
        directory = tmp_path / name
        shutil.copytree(shipped / name, directory, ignore=shutil.ignore_patterns("residual"))
        weights = directory / "generator" / "model.safetensors"
        today = Transformer.upgrade_state_dict(load_file(str(weights)))
        old = {key.replace("output_heads.", "heads.", 1) if key.startswith("output_heads.") else key: value
               for key, value in today.items()}  # fmt: skip
        assert any(key.startswith("heads.") for key in old)
        save_file(old, str(weights))
        model = Pipeline.from_pretrained(directory).model
        state = model.state_dict()
        assert today.keys() == state.keys()
        assert all(torch.equal(today[key].to(state[key].dtype), state[key]) for key in state), name
        assert len(model.output_heads) == model.config.num_heads_out


# -- the model keeps nothing between calls -------------------------------------------------------------------------

# What nn.Module itself keeps per module; the test compares every other attribute of every submodule.
MODULE_STATE = {"_parameters", "_buffers", "_modules"}


def attributes(model: torch.nn.Module) -> dict[str, dict]:
    """Every module's attributes other than its parameters, buffers and submodules (copied: a dict that grows during
    a call differs from its snapshot)."""
    return {
        name: {key: copy.copy(value) for key, value in vars(module).items() if key not in MODULE_STATE}
        for name, module in model.named_modules()
    }


@pytest.mark.parametrize("name", list(ORDERS))
def test_sampling_twice_leaves_the_models_attributes_unchanged(name):
    """Sampled twice through a Pipeline and through every sampler function, the transformer (and each of its
    submodules) has the attributes it had before: nothing but parameters, buffers and its config survives a call."""
    from test_speed import real_pipeline

    from argen.samplers import SAMPLERS

    pipeline = real_pipeline(name)
    refiner = real_pipeline(name, seed=1, width=16, depth=1)
    refiner.tokenizer = pipeline.tokenizer
    model = pipeline.model
    before = attributes(model)
    # Beyond torch's own bookkeeping, the model holds its config and the training-compile switch, nothing else.
    assert set(before[""]) - set(vars(torch.nn.Module())) == {"config", "_compiled"}
    for sampler in SAMPLERS:
        if not SAMPLERS.info(sampler).supports(pipeline.order):
            continue
        options = {"refiner": refiner, "draft_steps": 2} if sampler == "collaborative" else {}
        for _ in range(2):
            pipeline([0, 1], seed=0, cfg_scale=2.0, sampler=sampler, **options)
            SAMPLERS[sampler](model, pipeline.order, pipeline.tokenizer, labels=torch.tensor([0, 1]), cfg_scale=2.0,
                              **({"refiner": refiner.model, "draft_steps": 2} if options else {}))  # fmt: skip
            assert attributes(model) == before, sampler
    assert pipeline.engine._contexts  # the reuse lives in the pipeline's engine instead
