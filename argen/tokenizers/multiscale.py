"""Multi-scale residual quantization: "Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale
Prediction" (Tian et al., arXiv 2404.02905), §3.2 and Algorithm 1 (multi-scale VQVAE encoding).

The latent f (B, D, n, n) becomes one id grid per scale s = 1 … S (sides ``scales``, the last = n), coarse to
fine, on one shared Euclidean codebook of D-dimensional codes:

    r_s = f - f̂_{s-1}                                     (the residual, f̂_0 = 0)
    z_s = Q(area-downsample(r_s, side_s))                  (Algorithm 1: r_k = Q(interpolate(f, h_k, w_k)))
    f̂_s = f̂_{s-1} + φ_s(bicubic-upsample(lookup(z_s), n))  (Algorithm 1: f = f - φ_k(interpolate(z_k, h_K, w_K)))

φ_s is VAR's refinement conv, blended as (1 - r)·h + r·conv3×3(h) with r = ``quant_resi`` (0.5), and
partially shared: ``phi_count`` convs, scale s using the one whose tick in linspace(1/(3K), 1 - 1/(3K), K) is
nearest to s/(S-1) (VAR's ``share_quant_resi = 4``; 0 gives one φ per scale, 1 a single shared φ).
``compose(ids, upto)`` is f̂_upto; the next-scale order feeds it, area-resized, to the transformer.

Losses as in VAR's VectorQuantizer2: after every scale, ||f̂_s - sg(f)||² (codes and φ learn) plus
β·||sg(f̂_s) - f||² (the encoder commits), averaged over scales; the decoder sees f̂_S with a straight-through
gradient to f. Dead-code restart comes from `Codebook` (VAR has none; here it gives a data-dependent codebook
initialisation and revives unused codes), with the step's per-scale residuals as candidates.

`ResidualQuantizer.targets` is the one hook NFIG's frequency bands override (see frequency.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from argen.errors import ArgenError
from argen.tokenizers.autoencoder import Quantization, Quantizer, Tokenizer, register_tokenizer
from argen.tokenizers.vq import Codebook

if TYPE_CHECKING:
    from argen.tokenizers import TokenizerConfig


class Phi(nn.Conv2d):
    """VAR's φ: h → (1 - r)·h + r·conv3×3(h); r = 0 is the identity."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, 3, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.ratio) + super().forward(h).mul(self.ratio)


def check_scales(config: TokenizerConfig, side: int) -> None:
    scales = list(config.scales)
    if not scales or any(b <= a for a, b in zip(scales, scales[1:])) or scales[0] < 1:
        raise ArgenError(f"scales must be positive and strictly increasing, got {scales}")
    if scales[-1] != side:
        raise ArgenError(
            f"the last scale must equal the latent side {side} (image_size {config.image_size} / "
            f"2^downsample {2**config.downsample}), got scales {scales}"
        )
    if config.codebook_size < 2:
        raise ArgenError(f"codebook_size must be at least 2, got {config.codebook_size}")


class ResidualQuantizer(Quantizer):
    """latent (B, D, n, n) → one (B, s, s) id grid per scale, residual quantization on one shared codebook."""

    def __init__(self, config: TokenizerConfig, side: int):
        super().__init__()
        check_scales(config, side)
        self.scales = list(config.scales)
        self.side = side
        self.codebook_size, self.embed_dim = config.codebook_size, config.latent_dim
        self.grid_shapes = [(scale, scale) for scale in self.scales]
        self.commitment = config.commitment
        # Euclidean codes: residuals shrink scale by scale, and unit-norm codes could not follow them.
        self.codebook = Codebook(
            config.codebook_size, config.latent_dim, normalized=False, restart_after=config.restart_after, scale=0.1
        )
        count = len(self.scales) if config.phi_count == 0 else config.phi_count
        if count < 1:
            raise ArgenError(f"phi_count must be >= 0 (0: one phi per scale), got {config.phi_count}")
        self.phis = nn.ModuleList(Phi(config.latent_dim, config.quant_resi) for _ in range(count))
        self.phi_of_scale = self._assign_phis(len(self.scales), count, shared_per_scale=config.phi_count == 0)
        self._upsampling: dict[tuple, torch.Tensor] = {}  # (side, dtype, device) → `upsample`'s matrix

    @staticmethod
    def _assign_phis(scales: int, count: int, *, shared_per_scale: bool) -> list[int]:
        """Which φ each scale uses (VAR's PhiPartiallyShared: nearest tick to s/(S-1))."""
        if shared_per_scale:
            return list(range(scales))
        ticks = np.linspace(1 / 3 / count, 1 - 1 / 3 / count, count)
        return [int(np.argmin(np.abs(ticks - index / max(scales - 1, 1)))) for index in range(scales)]

    def targets(self, latent: torch.Tensor) -> object:
        """Whatever `target` needs about the (detached) latent; VAR needs the latent itself."""
        return latent

    def target(self, prepared: object, composed: torch.Tensor, scale: int) -> torch.Tensor:
        """What scale ``scale`` quantizes, (B, D, n, n): VAR's residual r_s = f - f̂_{s-1}."""
        return prepared - composed

    def expand(self, codes: torch.Tensor, scale: int) -> torch.Tensor:
        """codes (B, D, s, s) → φ_s(bicubic-upsample(codes)) (B, D, n, n), the scale's share of f̂."""
        if codes.shape[-1] != self.side:
            codes = self.upsample(codes)
        return self.phis[self.phi_of_scale[scale]](codes)

    def upsample(self, codes: torch.Tensor) -> torch.Tensor:
        """``F.interpolate(codes, size=(n, n), mode="bicubic")`` as two products, A · codes · Aᵀ.

        Bicubic interpolation is linear and separable, so it is a matrix A (n × s) on each side; A is taken from
        ``F.interpolate`` itself (of indicator images, in float64), so borders are handled as there, and equal to
        it up to float rounding. Two small products cost a fraction of the interpolation kernel at these sizes:
        a (1, 32, 3, 3) grid to 7 × 7 takes ~22 µs through ``F.interpolate`` on this CPU, which next-scale
        sampling pays at every step.
        """
        side = codes.shape[-1]
        key = (side, codes.dtype, codes.device)
        matrix = self._upsampling.get(key)
        if matrix is None:
            rows = torch.eye(side, dtype=torch.float64).view(side, 1, side, 1).expand(side, 1, side, side)
            upsampled = F.interpolate(rows, size=(self.side, self.side), mode="bicubic")  # row k: A[:, k] down col 0
            matrix = upsampled[:, 0, :, 0].t().to(codes.dtype).to(codes.device)  # (n, s)
            self._upsampling[key] = matrix
        return torch.matmul(torch.matmul(matrix, codes), matrix.t())

    def forward(self, latent: torch.Tensor, *, update: bool = False) -> Quantization:
        detached = latent.detach()
        prepared = self.targets(detached)
        composed = torch.zeros_like(detached)
        ids, candidates = [], []
        codebook_loss = commitment_loss = latent.new_zeros(())
        for scale, side in enumerate(self.scales):
            target = self.target(prepared, composed.detach(), scale)
            if side != self.side:
                target = F.interpolate(target, size=(side, side), mode="area")
            flat = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1])  # (B·s·s, D)
            grid = self.codebook.nearest(flat).view(-1, side, side)
            composed = composed + self.expand(self.codebook.lookup(grid).permute(0, 3, 1, 2), scale)
            codebook_loss = codebook_loss + F.mse_loss(composed, detached)
            commitment_loss = commitment_loss + F.mse_loss(composed.detach(), latent)
            ids.append(grid)
            candidates.append(flat)
        losses = {
            "codebook": codebook_loss / len(self.scales),
            "commitment": self.commitment * commitment_loss / len(self.scales),
        }
        # Straight-through: the value of f̂_S, the gradient of f.
        quantized = latent + (composed.detach() - detached)
        restarted = self.codebook.restart(ids, torch.cat(candidates)) if update else 0
        return Quantization(quantized, ids, losses, {"restarted": float(restarted)})

    def embed(self, ids: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.codebook.lookup(grid).permute(0, 3, 1, 2) for grid in ids]

    def compose(self, ids: list[torch.Tensor], upto: int) -> torch.Tensor:
        batch = ids[0].shape[0]
        composed = self.codebook.weight.new_zeros(batch, self.embed_dim, self.side, self.side)
        for scale, codes in enumerate(self.embed(ids[:upto])):
            composed = composed + self.expand(codes, scale)
        return composed

    def compose_step(self, latent: torch.Tensor, ids: list[torch.Tensor], step: int) -> torch.Tensor:
        # The same sum as compose, one term at a time: f̂_{s+1} = f̂_s + φ_s(upsample(lookup(z_s))).
        return latent + self.expand(self.codebook.lookup(ids[step]).permute(0, 3, 1, 2), step)

    def codes_to_ids(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        grids = []
        for grid in codes:
            batch, dim, height, width = grid.shape
            grids.append(self.codebook.nearest(grid.permute(0, 2, 3, 1).reshape(-1, dim)).view(batch, height, width))
        return grids


@register_tokenizer
class MultiScaleTokenizer(Tokenizer):
    """VAR's multi-scale residual tokenizer: one grid per entry of ``scales``."""

    kind = "multiscale"
    method, paper, arxiv = "multi-scale residual quantization", "VAR", "2404.02905"
    rank = 30

    def make_quantizer(self, config: TokenizerConfig) -> Quantizer:
        return ResidualQuantizer(config, self.latent_side)
