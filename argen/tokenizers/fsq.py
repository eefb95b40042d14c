"""Finite scalar quantization: "Finite Scalar Quantization: VQ-VAE Made Simple" (Mentzer et al., arXiv 2309.15505).

The latent (B, D, h, w) is projected by a 1×1 conv to one channel per entry of ``fsq_levels``; each channel is
bounded to about (-L/2, L/2) with tanh and rounded to one of L integer levels (§3, and the even-L offset of the
paper's reference code),
with a straight-through gradient; a 1×1 conv projects the codes back to D. The codebook is implicit: the
prod(levels) points of the grid (1024 for the default [8, 8, 4, 4]), so there is nothing to learn, restart or
collapse, and no codebook loss.

Ids are the mixed-radix numbers of the per-channel digits: id = Σ_c digit_c · Π_{c'<c} L_{c'}, a bijection
between [0, prod(levels)) and the grid. Codes are the integer levels divided by ⌊L/2⌋, so they lie in [-1, 1].
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from argen.errors import ArgenError
from argen.tokenizers.autoencoder import Quantization, Quantizer, Tokenizer, register_tokenizer

if TYPE_CHECKING:
    from argen.tokenizers import TokenizerConfig


class FiniteScalarQuantizer(Quantizer):
    """latent (B, D, h, w) → one (B, h, w) grid of ids in [0, prod(levels)); codes (B, len(levels), h, w)."""

    def __init__(self, config: TokenizerConfig, side: int):
        super().__init__()
        levels = list(config.fsq_levels)
        if not levels or min(levels) < 2:
            raise ArgenError(f"fsq_levels needs at least one level count, each >= 2, got {levels}")
        self.codebook_size, self.embed_dim = math.prod(levels), len(levels)
        self.grid_shapes = [(side, side)]
        self.project_in = nn.Conv2d(config.latent_dim, len(levels), 1)
        self.project_out = nn.Conv2d(len(levels), config.latent_dim, 1)
        # Non-persistent: derived from the config, so they stay out of checkpoints. Shaped (1, d, 1, 1).
        level_tensor = torch.tensor(levels, dtype=torch.float32).view(1, -1, 1, 1)
        basis = torch.tensor([math.prod(levels[:index]) for index in range(len(levels))], dtype=torch.long)
        self.register_buffer("levels", level_tensor, persistent=False)
        self.register_buffer("half_width", torch.floor(level_tensor / 2), persistent=False)
        self.register_buffer("basis", basis.view(1, -1, 1, 1), persistent=False)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """z → values that round to exactly the L integers -⌊L/2⌋ … ⌈L/2⌉ - 1, per channel.

        Even L needs the half-step offset and the matching input shift, which keeps z = 0 mapped to 0.
        """
        half = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def forward(self, latent: torch.Tensor, *, update: bool = False) -> Quantization:
        bounded = self.bound(self.project_in(latent))
        rounded = bounded + (bounded.round() - bounded).detach()  # straight-through rounding (§3)
        codes = rounded / self.half_width  # (B, d, h, w) in [-1, 1]
        ids = self.codes_to_ids([codes.detach()])
        return Quantization(self.project_out(codes), ids, {}, {})

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) → codes (B, d, h, w): the mixed-radix digits, centred and scaled to [-1, 1]."""
        digits = (ids.unsqueeze(1) // self.basis) % self.levels.long()
        return (digits - self.half_width) / self.half_width

    def embed(self, ids: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.ids_to_codes(ids[0])]

    def compose(self, ids: list[torch.Tensor], upto: int) -> torch.Tensor:
        codes = self.ids_to_codes(ids[0])
        if upto == 0:
            shape = (codes.shape[0], self.project_out.out_channels, *codes.shape[-2:])
            return torch.zeros(shape, device=codes.device, dtype=codes.dtype)
        return self.project_out(codes)

    def codes_to_ids(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Codes (B, d, h, w) → ids (B, h, w); any vector is first rounded onto the grid."""
        digits = (codes[0] * self.half_width).round() + self.half_width
        digits = torch.minimum(digits.clamp_min(0), self.levels - 1).long()
        return [(digits * self.basis).sum(dim=1)]


@register_tokenizer
class FSQTokenizer(Tokenizer):
    """Single-grid tokenizer with finite scalar quantization; ``codebook_size`` is prod(fsq_levels)."""

    kind = "fsq"
    method, paper, arxiv = "finite scalar quantization", "FSQ", "2309.15505"
    rank = 20

    def make_quantizer(self, config: TokenizerConfig) -> Quantizer:
        return FiniteScalarQuantizer(config, self.latent_side)
