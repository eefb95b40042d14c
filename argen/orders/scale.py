"""Next-scale order, as in VAR ("Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale
Prediction", arXiv 2404.02905).

One grid (scale) per step, coarse to fine; all tokens of a scale are predicted at once, bidirectional inside the
scale and causal across scales (the block-causal mask of §3.2). The input of scale s is the latent rebuilt from
scales 0..s-1, ``tokenizer.compose(ids, s)``, area-resized to scale s's grid (VAR's ``idxBl_to_var_input``); scale
0 has nothing before it, so its input is the start token(s) (VAR's class token ``sos``). The inputs are features
of the tokenizer's latent width, which the transformer projects (``feature_dim``).

`CoarseToFineOrder` holds the code; `ScaleOrder` binds it to VAR's multi-scale residual tokenizer and
`frequency.FrequencyOrder` to NFIG's frequency bands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from argen.orders.base import Layout, Order, StepInputs, check_ids, register_order

if TYPE_CHECKING:
    from argen.tokenizers.protocol import TokenizerProtocol


class CoarseToFineOrder(Order):
    """One grid per step, in the tokenizer's grid order; inputs are the composed earlier grids, resized."""

    input_kind = "features"
    coarse_to_fine = True

    def _build_layout(self, grid_shapes: tuple[tuple[int, int], ...]) -> Layout:
        steps, positions, sizes, cells, per_step = [], [], [], [], []
        start = 0
        for grid, (h, w) in enumerate(grid_shapes):
            rows = torch.arange(h).repeat_interleave(w)
            cols = torch.arange(w).repeat(h)
            count = h * w
            steps.append(torch.full((count,), grid))
            positions.append(torch.stack([torch.full((count,), grid), rows, cols], dim=1))
            sizes.append(torch.tensor([[h, w]]).expand(count, 2))
            cells.append(torch.stack([torch.full((count,), grid), rows, cols], dim=1))
            per_step.append(torch.arange(start, start + count))
            start += count
        return Layout(
            grid_shapes=grid_shapes,
            step_of=torch.cat(steps),
            positions=torch.cat(positions),
            sizes=torch.cat(sizes),
            target_cells=torch.cat(cells),
            targets_of_step=per_step,
            inputs_of_step=[indices.clone() for indices in per_step],
        )

    def train_inputs(self, ids: list[Tensor], tokenizer: TokenizerProtocol) -> tuple[Tensor, Tensor]:
        check_ids(ids, tokenizer.grid_shapes)
        inputs = torch.cat([self.step_inputs(step, ids, tokenizer) for step in range(len(ids))], dim=1)
        return inputs, self.targets(ids)

    def step_inputs(self, step: int, ids: list[Tensor], tokenizer: TokenizerProtocol) -> Tensor:
        # compose(ids, 0) is all zeros: step 0's slots carry no information and the transformer puts its start
        # vector (plus the class embedding) there, VAR's sos token.
        return self.latent_inputs(tokenizer.compose(ids, step), step, tokenizer)

    def latent_inputs(self, latent: Tensor, step: int, tokenizer: TokenizerProtocol) -> Tensor:
        """The composed latent of steps < ``step`` (B, F, h_last, w_last) → step ``step``'s inputs (B, h*w, F)."""
        h, w = tokenizer.grid_shapes[step]
        if tuple(latent.shape[-2:]) != (h, w):
            latent = F.interpolate(latent, size=(h, w), mode="area")
        return latent.flatten(2).transpose(1, 2)  # (B, h*w, F)

    def decoding_inputs(self, tokenizer: TokenizerProtocol) -> StepInputs:
        return RunningLatent(self, tokenizer)

    def preview(self, ids: list[Tensor], step: int, tokenizer: TokenizerProtocol) -> Tensor:
        return tokenizer.decode_latent(tokenizer.compose(ids, step))

    def scatter(self, ids: list[Tensor], step: int, sampled: Tensor) -> list[Tensor]:
        # Step s's targets are grid s in row-major order: the new grid is the sampled ids, reshaped.
        grids = list(ids)
        grids[step] = sampled.to(ids[step].dtype).reshape(ids[step].shape)
        return grids


class RunningLatent(StepInputs):
    """Step inputs from VAR's running latent f̂ (``f_hat`` in its ``autoregressive_infer_cfg``): compose(ids, s) is
    kept for every step fed so far and the next one is ``tokenizer.compose_step`` of the last, one grid added,
    instead of recomposing (upsampling and φ-convolving) every earlier grid at every step. Tokenizers without
    ``compose_step`` are recomposed. The final latent goes to the decoder, so decoding recomposes nothing either.
    """

    def __init__(self, order: CoarseToFineOrder, tokenizer: TokenizerProtocol) -> None:
        super().__init__(order, tokenizer)
        self.latents: list[Tensor] = []  # latents[s] = compose(ids, s), (B, F, h_last, w_last)
        self.incremental = hasattr(tokenizer, "compose_step")

    def latent(self, step: int, ids: list[Tensor]) -> Tensor:
        """compose(ids, step), from the latents kept (valid while the grids of steps < step are final)."""
        if step < len(self.latents):
            return self.latents[step]
        if not self.latents:
            self.latents.append(self.tokenizer.compose(ids, 0))
        while len(self.latents) <= step:
            done = len(self.latents) - 1
            if self.incremental:
                self.latents.append(self.tokenizer.compose_step(self.latents[done], ids, done))
            else:
                self.latents.append(self.tokenizer.compose(ids, done + 1))
        return self.latents[step]

    def __call__(self, step: int, ids: list[Tensor]) -> Tensor:
        return self.order.latent_inputs(self.latent(step, ids), step, self.tokenizer)

    def span(self, first: int, last: int, ids: list[Tensor]) -> Tensor:
        inputs = [self(step, ids) for step in range(first, last + 1)]
        return inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1)

    def final_latent(self, ids: list[Tensor]) -> Tensor | None:
        if not self.incremental:
            return None
        return self.latent(len(ids), ids)


@register_order
class ScaleOrder(CoarseToFineOrder):
    name = "scale"
    method, paper, arxiv = "next-scale", "VAR", "2404.02905"
    default_tokenizer = "multiscale"
    tokenizer_kinds = ("multiscale",)
    rank = 20
