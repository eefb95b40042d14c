"""Next-neighbor order, as in NAR ("Neighboring Autoregressive Modeling for Efficient Visual Generation",
arXiv 2503.10696; code github.com/ThisisBillhe/NAR).

Generation is outpainting from the top-left cell: step s produces every cell at Manhattan distance s from it, the
anti-diagonal r + c = s, so an h×w grid takes h + w - 1 steps (2n - 1 on n×n) instead of h·w.

The paper's dimension-oriented decoding heads, as its image code does them (`gpt.py`, `generate.py`):

- two heads read each position: the horizontal head (the usual output head on the last block) predicts the token's
  right neighbour (r, c+1); the vertical head (one extra transformer block, its own norm and linear) predicts its
  lower neighbour (r+1, c). The transformer builds them when ``num_heads_out == 2``.
- a cell (r, c) with r, c ≥ 1 is predicted by both of its already-generated neighbours: its logits are the mean of
  the horizontal head at (r, c-1) and the vertical head at (r-1, c). Cells of row 0 have only a left neighbour
  (horizontal head), cells of column 0 only an upper one (vertical head), and the first cell (0, 0) is predicted
  from the start token by the mean of both heads.
- training and inference feed the tokens of each anti-diagonal together and use the mask "position of (r, c) sees
  the start token and every token with r' + c' ≤ r + c" (NAR's ``setup_diagonal_mask``), which is the block-causal
  mask with step(r, c) = r + c + 1 and step(start) = 0.

Differences from NAR's code, none of which changes the model it defines: the sequence is laid out in step order
(anti-diagonal by anti-diagonal, top row first) rather than raster order, so that a KV cache grows by appending
each step; the last cell's token is not fed (its outputs would predict cells outside the grid, which NAR's training
discards); and positions are learned (step, row, col) embeddings rather than 2-D RoPE. So the inputs are the
targets shifted right behind a start token, as in raster order but along anti-diagonals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from argen.orders.base import Layout, Order, register_order, single_grid_cells

if TYPE_CHECKING:
    from argen.tokenizers.protocol import TokenizerProtocol

HORIZONTAL, VERTICAL = 0, 1


def diagonal_order(h: int, w: int) -> list[tuple[int, int]]:
    """The cells of an h×w grid by anti-diagonal r + c, top row first inside one."""
    return sorted(((r, c) for r in range(h) for c in range(w)), key=lambda cell: (cell[0] + cell[1], cell[0]))


@register_order
class NeighborOrder(Order):
    name = "neighbor"
    method, paper, arxiv = "next-neighbor", "NAR", "2503.10696"
    default_tokenizer = "vq"
    tokenizer_kinds = ("vq", "fsq")
    rank = 40
    single_grid = True
    input_kind = "ids"
    num_heads_out = 2
    # A window counts steps: raster's 16 tokens are one row of a 16×16 grid; 4 anti-diagonals of it are up to 64.
    speculative_window = 4

    def __init__(self) -> None:
        super().__init__()
        self._sources: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    def _build_layout(self, grid_shapes: tuple[tuple[int, int], ...]) -> Layout:
        h, w = grid_shapes[0]
        cells = diagonal_order(h, w)
        diagonals = torch.tensor([r + c for r, c in cells])
        # Position 0 is the start token (step 0, predicting (0, 0)); position j > 0 is fed the token of target j - 1,
        # at step diagonal + 1, and carries that token's own cell.
        fed = [(0, 0, 0)] + [(r + c + 1, r, c) for r, c in cells[:-1]]
        positions = torch.tensor(fed, dtype=torch.long)
        step_of = positions[:, 0].clone()
        num_steps = h + w - 1
        return Layout(
            grid_shapes=grid_shapes,
            step_of=step_of,
            positions=positions,
            sizes=torch.tensor([[h, w]]).expand(len(cells), 2).clone(),
            target_cells=single_grid_cells(h, w, cells),
            targets_of_step=[torch.nonzero(diagonals == s).flatten() for s in range(num_steps)],
            inputs_of_step=[torch.nonzero(step_of == s).flatten() for s in range(num_steps)],
        )

    def _neighbor_sources(self, h: int, w: int) -> tuple[Tensor, Tensor]:
        """(T, 2) sequence positions whose horizontal / vertical head predicts each target, and (T, 2) weights."""
        if (h, w) not in self._sources:
            cells = diagonal_order(h, w)
            position_of = {cell: index + 1 for index, cell in enumerate(cells)}  # where each cell's token is fed
            sources, weights = [], []
            for r, c in cells:
                left, up = position_of.get((r, c - 1)), position_of.get((r - 1, c))
                if left is None and up is None:  # (0, 0): both heads of the start token
                    sources.append((0, 0))
                    weights.append((0.5, 0.5))
                elif up is None:
                    sources.append((left, left))
                    weights.append((1.0, 0.0))
                elif left is None:
                    sources.append((up, up))
                    weights.append((0.0, 1.0))
                else:
                    sources.append((left, up))
                    weights.append((0.5, 0.5))
            self._sources[(h, w)] = (torch.tensor(sources), torch.tensor(weights))
        return self._sources[(h, w)]

    def logits(self, outputs: Tensor, layout: Layout, step: int | None = None) -> Tensor:
        if outputs.dim() != 4 or outputs.shape[2] != 2:
            raise ValueError(f"next-neighbor needs (B, L, 2, V) outputs of two heads, got {tuple(outputs.shape)}")
        sources, weights = self._neighbor_sources(*layout.grid_shapes[0])
        if step is not None:
            targets = layout.targets_of_step[step]
            sources = sources[targets] - layout.inputs_of_step[step][0]
            weights = weights[targets]
        length = outputs.shape[1]
        if int(sources.max()) >= length:
            raise ValueError(f"outputs cover {length} positions, fewer than the layout needs")
        sources, weights = sources.to(outputs.device), weights.to(outputs.device, outputs.dtype)
        horizontal = outputs[:, sources[:, 0], HORIZONTAL]  # (B, T_s, V)
        vertical = outputs[:, sources[:, 1], VERTICAL]
        return weights[:, 0, None] * horizontal + weights[:, 1, None] * vertical

    def train_inputs(self, ids: list[Tensor], tokenizer: TokenizerProtocol) -> tuple[Tensor, Tensor]:
        return self.shifted_train_inputs(ids, tokenizer)  # targets in anti-diagonal order

    def step_inputs(self, step: int, ids: list[Tensor], tokenizer: TokenizerProtocol) -> Tensor:
        grid = ids[0]
        if step == 0:
            return self.start_tokens(grid, tokenizer)
        layout = self.layout(tokenizer.grid_shapes)
        cells = layout.target_cells[layout.targets_of_step[step - 1]].to(grid.device)
        return grid[:, cells[:, 1], cells[:, 2]]  # (B, cells of anti-diagonal step - 1)

    def preview(self, ids: list[Tensor], step: int, tokenizer: TokenizerProtocol) -> Tensor:
        return self._masked_preview(ids, step, tokenizer)
