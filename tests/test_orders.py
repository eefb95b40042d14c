"""Order contract tests, parametrised over every order in ORDERS, on a fake tokenizer.

`FakeTokenizer` (also imported by test_transformer.py and test_sampling.py) implements the tokenizer contract with
a random fixed code table, so these tests do not depend on argen.tokenizers.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from argen.errors import ArgenError
from argen.orders import ORDERS, block_causal_mask, build_order
from argen.orders.neighbor import diagonal_order

SINGLE_GRID = [(4, 4)]
MULTI_GRID = [(1, 1), (2, 2), (3, 3), (4, 4)]
KIND_FOR_ORDER = {"raster": "vq", "scale": "multiscale", "frequency": "frequency", "neighbor": "fsq"}


@dataclass
class FakeTokenizerConfig:
    kind: str


class FakeTokenizer(nn.Module):
    """The tokenizer contract with a random code table: compose = sum of the embedded grids, upsampled."""

    def __init__(self, kind: str = "vq", *, grid_shapes=None, codebook_size: int = 16, latent_dim: int = 4):
        super().__init__()
        self.config = FakeTokenizerConfig(kind=kind)
        if grid_shapes is None:
            grid_shapes = SINGLE_GRID if kind in ("vq", "fsq") else MULTI_GRID
        self.grid_shapes = [tuple(shape) for shape in grid_shapes]
        self.codebook_size = codebook_size
        self.register_buffer(
            "codes", torch.randn(codebook_size, latent_dim, generator=torch.Generator().manual_seed(0))
        )

    def random_ids(self, batch: int, *, seed: int = 0) -> list[Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return [torch.randint(self.codebook_size, (batch, h, w), generator=generator) for h, w in self.grid_shapes]

    def encode(self, images: Tensor) -> list[Tensor]:
        # Quantize each grid's mean brightness to a code index: enough for round trips in these tests.
        levels = images.mean(dim=1, keepdim=True).clamp(-1, 1).add(1).div(2)
        grids = [F.interpolate(levels, size=shape, mode="area")[:, 0] for shape in self.grid_shapes]
        return [(grid * (self.codebook_size - 1)).round().long() for grid in grids]

    def embed(self, ids: list[Tensor]) -> list[Tensor]:
        return [self.codes[grid].permute(0, 3, 1, 2) for grid in ids]  # (B, D, h, w)

    def compose(self, ids: list[Tensor], upto: int) -> Tensor:
        h, w = self.grid_shapes[-1]
        latent = torch.zeros(ids[0].shape[0], self.codes.shape[1], h, w)
        for embedded in self.embed(ids[:upto]):
            latent = latent + F.interpolate(embedded, size=(h, w), mode="bilinear", align_corners=False)
        return latent

    def decode_latent(self, latent: Tensor) -> Tensor:
        return torch.tanh(F.interpolate(latent[:, :1], scale_factor=4, mode="nearest"))  # (B, 1, 4h, 4w)

    def decode(self, ids: list[Tensor]) -> Tensor:
        return self.decode_latent(self.compose(ids, len(ids)))


def make(name: str) -> tuple:
    tokenizer = FakeTokenizer(KIND_FOR_ORDER[name])
    order = build_order(name, tokenizer)
    return order, tokenizer, order.layout(tokenizer.grid_shapes)


def ids_of_steps(order, layout, ids: list[Tensor], steps, *, seed: int) -> list[Tensor]:
    """``ids`` with the cells produced at ``steps`` replaced by other random ids."""
    generator = torch.Generator().manual_seed(seed)
    targets = order.targets(ids).clone()
    for step in steps:
        where = layout.targets_of_step[step]
        targets[:, where] = (
            targets[:, where] + torch.randint(1, 16, targets[:, where].shape, generator=generator)
        ) % 16
    result = [grid.clone() for grid in ids]
    for step in range(layout.num_steps):
        result = order.scatter(result, step, targets[:, layout.targets_of_step[step]])
    return result


@pytest.mark.parametrize("name", list(ORDERS))
def test_layout_covers_every_cell_once_in_step_order(name):
    order, tokenizer, layout = make(name)
    total = sum(h * w for h, w in tokenizer.grid_shapes)
    assert layout.length == total and layout.target_cells.shape == (total, 3)
    cells = {tuple(cell) for cell in layout.target_cells.tolist()}
    expected = {(g, r, c) for g, (h, w) in enumerate(tokenizer.grid_shapes) for r in range(h) for c in range(w)}
    assert cells == expected and len(cells) == total
    produced = torch.cat(layout.targets_of_step)
    assert torch.equal(produced.sort().values, torch.arange(total))
    assert torch.equal(torch.cat(layout.inputs_of_step), torch.arange(total))  # sequence positions in step order
    assert bool((layout.step_of[1:] >= layout.step_of[:-1]).all())
    assert int(layout.step_of[0]) == 0 and int(layout.step_of[-1]) == layout.num_steps - 1
    for step, fed in enumerate(layout.inputs_of_step):
        assert bool((layout.step_of[fed] == step).all())
    assert torch.equal(layout.positions[:, 0], layout.step_of)


@pytest.mark.parametrize("name", list(ORDERS))
def test_scatter_rebuilds_the_ids_and_targets_follow_the_layout(name):
    order, tokenizer, layout = make(name)
    ids = tokenizer.random_ids(3)
    targets = order.targets(ids)
    grid, row, col = layout.target_cells.unbind(1)
    for t in range(layout.length):
        assert torch.equal(targets[:, t], ids[int(grid[t])][:, int(row[t]), int(col[t])])
    rebuilt = [torch.zeros_like(g) for g in ids]
    for step in range(layout.num_steps):
        rebuilt = order.scatter(rebuilt, step, targets[:, layout.targets_of_step[step]])
    assert all(torch.equal(a, b) for a, b in zip(rebuilt, ids))


@pytest.mark.parametrize("name", list(ORDERS))
def test_training_inputs_equal_inference_inputs_step_by_step(name):
    order, tokenizer, layout = make(name)
    ids = tokenizer.random_ids(3)
    inputs, targets = order.train_inputs(ids, tokenizer)
    assert inputs.shape[:2] == targets.shape == (3, layout.length)
    for step in range(layout.num_steps):
        # Inference holds only the ids of steps < step; whatever sits in the later cells must not matter.
        partial = ids_of_steps(order, layout, ids, range(step, layout.num_steps), seed=step)
        built = order.step_inputs(step, partial, tokenizer)
        assert torch.equal(built, inputs[:, layout.inputs_of_step[step]])


@pytest.mark.parametrize("name", list(ORDERS))
def test_step_zero_inputs_are_start_tokens(name):
    order, tokenizer, layout = make(name)
    inputs, _ = order.train_inputs(tokenizer.random_ids(2), tokenizer)
    first = inputs[:, layout.inputs_of_step[0]]
    if order.input_kind == "ids":
        assert bool((first == tokenizer.codebook_size).all())
    else:
        assert bool((first == 0).all())  # nothing composed yet; the transformer puts its start vector there


def test_block_causal_mask_on_known_steps():
    mask = block_causal_mask(torch.tensor([0, 1, 1, 2]))
    expected = torch.tensor(
        [[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)
    with_cache = block_causal_mask(torch.tensor([2]), torch.tensor([0, 1, 1, 2, 3]))
    assert torch.equal(with_cache, torch.tensor([[True, True, True, True, False]]))


@pytest.mark.parametrize("name", list(ORDERS))
def test_layout_mask_is_block_causal(name):
    _, _, layout = make(name)
    mask = layout.mask()
    steps = layout.step_of
    assert torch.equal(mask, steps[None, :] <= steps[:, None])
    assert bool(mask.diagonal().all())
    # Inside a step every position sees every other (bidirectional); across steps only earlier ones.
    for fed in layout.inputs_of_step:
        assert bool(mask[fed][:, fed].all())
        assert not bool(mask[fed][:, int(fed[-1]) + 1 :].any())


def test_neighbor_steps_are_anti_diagonals():
    tokenizer = FakeTokenizer("vq", grid_shapes=[(5, 5)])
    order = build_order("neighbor", tokenizer)
    layout = order.layout(tokenizer.grid_shapes)
    assert layout.num_steps == 2 * 5 - 1
    for step, produced in enumerate(layout.targets_of_step):
        rows, cols = layout.target_cells[produced, 1], layout.target_cells[produced, 2]
        assert bool((rows + cols == step).all()) and len(produced) == min(step + 1, 9 - step)
    rectangular = order.layout([(2, 4)])
    assert rectangular.num_steps == 5 and diagonal_order(2, 2) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_neighbor_logits_combine_the_right_and_down_heads():
    order = ORDERS["neighbor"]()
    layout = order.layout([(3, 3)])
    cells = diagonal_order(3, 3)
    fed_at = {cell: index + 1 for index, cell in enumerate(cells)}  # position fed each cell's token
    batch, vocab = 2, 5
    outputs = torch.randn(batch, layout.length, 2, vocab)
    logits = order.logits(outputs, layout)
    for t, (r, c) in enumerate(cells):
        right_of_left = outputs[:, fed_at[(r, c - 1)], 0] if c > 0 else None
        down_of_up = outputs[:, fed_at[(r - 1, c)], 1] if r > 0 else None
        if (r, c) == (0, 0):
            expected = (outputs[:, 0, 0] + outputs[:, 0, 1]) / 2
        elif r == 0:
            expected = right_of_left
        elif c == 0:
            expected = down_of_up
        else:
            expected = (right_of_left + down_of_up) / 2
        assert torch.allclose(logits[:, t], expected)
    for step in range(layout.num_steps):
        fed = layout.inputs_of_step[step]
        per_step = order.logits(outputs[:, fed], layout, step)
        assert torch.equal(per_step, logits[:, layout.targets_of_step[step]])


@pytest.mark.parametrize(
    ("name", "kind", "needed"),
    [
        ("raster", "multiscale", "vq or fsq"),
        ("raster", "frequency", "vq or fsq"),
        ("neighbor", "multiscale", "vq or fsq"),
        ("scale", "vq", "multiscale"),
        ("scale", "frequency", "multiscale"),
        ("frequency", "fsq", "frequency"),
        ("frequency", "multiscale", "frequency"),
    ],
)
def test_mismatched_order_and_tokenizer_are_refused(name, kind, needed):
    with pytest.raises(ArgenError, match=f"needs a {needed} tokenizer, got a '{kind}'"):
        build_order(name, FakeTokenizer(kind))


def test_unknown_order_and_multi_grid_single_grid_order_are_refused():
    with pytest.raises(ArgenError, match="unknown order"):
        build_order("spiral", FakeTokenizer("vq"))
    with pytest.raises(ArgenError, match="single-grid"):
        build_order("raster", FakeTokenizer("vq", grid_shapes=[(2, 2), (4, 4)]))
    order = build_order("raster", FakeTokenizer("vq"))
    with pytest.raises(ArgenError, match="does not fit"):
        order.train_inputs([torch.zeros(2, 3, 3, dtype=torch.long)], FakeTokenizer("vq"))


@pytest.mark.parametrize("name", list(ORDERS))
def test_preview_goes_from_nothing_to_the_decoded_image(name):
    order, tokenizer, layout = make(name)
    ids = tokenizer.random_ids(2)
    blank = tokenizer.decode_latent(torch.zeros_like(tokenizer.compose(ids, len(ids))))
    assert torch.equal(order.preview(ids, 0, tokenizer), blank)
    assert torch.allclose(order.preview(ids, layout.num_steps, tokenizer), tokenizer.decode(ids))
    middle = order.preview(ids, layout.num_steps // 2, tokenizer)
    assert middle.shape == blank.shape
    # The preview after k steps depends only on what those k steps produced.
    later = ids_of_steps(order, layout, ids, range(layout.num_steps // 2, layout.num_steps), seed=7)
    assert torch.allclose(order.preview(later, layout.num_steps // 2, tokenizer), middle)


def test_model_settings_follow_order_and_tokenizer():
    tokenizer = FakeTokenizer("multiscale")
    settings = build_order("scale", tokenizer).model_settings(tokenizer)
    assert settings == {"vocab_size": 16, "feature_dim": 4, "num_heads_out": 1, "max_steps": 4, "max_grid": 4}
    tokenizer = FakeTokenizer("vq")
    settings = build_order("neighbor", tokenizer).model_settings(tokenizer)
    assert settings == {"vocab_size": 16, "feature_dim": 0, "num_heads_out": 2, "max_steps": 7, "max_grid": 4}
