"""Raster next-token order, as in LlamaGen ("Autoregressive Model Beats Diffusion: Llama for Scalable Image
Generation", arXiv 2406.06525).

One token per step, row-major over the tokenizer's single grid. The inputs are the ids shifted right behind a start
token (id ``codebook_size``): position p is fed the id of cell p - 1 and predicts cell p, so the block-causal mask
with one position per step is the ordinary causal mask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from argen.orders.base import Layout, Order, register_order, single_grid_cells

if TYPE_CHECKING:
    from argen.tokenizers.protocol import TokenizerProtocol


@register_order
class RasterOrder(Order):
    name = "raster"
    method, paper, arxiv = "raster next-token", "LlamaGen", "2406.06525"
    default_tokenizer = "vq"
    tokenizer_kinds = ("vq", "fsq")
    rank = 10
    single_grid = True
    input_kind = "ids"

    def _build_layout(self, grid_shapes: tuple[tuple[int, int], ...]) -> Layout:
        (h, w), length = grid_shapes[0], grid_shapes[0][0] * grid_shapes[0][1]
        steps = torch.arange(length)
        rows, cols = steps // w, steps % w
        return Layout(
            grid_shapes=grid_shapes,
            step_of=steps,
            # Position p is the slot that predicts cell p, so it carries cell p's row and column.
            positions=torch.stack([steps, rows, cols], dim=1),
            sizes=torch.tensor([[h, w]]).expand(length, 2).clone(),
            target_cells=single_grid_cells(h, w, list(zip(rows.tolist(), cols.tolist()))),
            targets_of_step=[steps[p : p + 1] for p in range(length)],
            inputs_of_step=[steps[p : p + 1] for p in range(length)],
        )

    def train_inputs(self, ids: list[Tensor], tokenizer: TokenizerProtocol) -> tuple[Tensor, Tensor]:
        return self.shifted_train_inputs(ids, tokenizer)

    def step_inputs(self, step: int, ids: list[Tensor], tokenizer: TokenizerProtocol) -> Tensor:
        if step == 0:
            return self.start_tokens(ids[0], tokenizer)
        return ids[0].flatten(1)[:, step - 1 : step]  # (B, 1)

    def span_inputs(self, first: int, last: int, ids: list[Tensor], tokenizer: TokenizerProtocol) -> Tensor:
        flat = ids[0].flatten(1)  # position p is fed cell p - 1: steps first .. last are one slice
        if first > 0:
            return flat[:, first - 1 : last]
        return torch.cat([self.start_tokens(ids[0], tokenizer), flat[:, :last]], dim=1)

    def preview(self, ids: list[Tensor], step: int, tokenizer: TokenizerProtocol) -> Tensor:
        return self._masked_preview(ids, step, tokenizer)
