"""VAR's published multi-scale VQVAE (``vae_ch160v4096z32.pth``): "Visual Autoregressive Modeling: Scalable Image
Generation via Next-Scale Prediction" (Tian et al., arXiv 2404.02905), §3.2 and Algorithm 1.

The network is the VQGAN encoder/decoder of `vqgan` with VAR's 3×3 ``quant_conv``/``post_quant_conv`` around the
latent; the quantizer is argen's `multiscale.ResidualQuantizer` (same f̂, same φ) with two differences that the
published weights need:

- encoding runs VAR's own arithmetic (a running residual f_rest -= φ(·), ``F.interpolate`` bicubic, distances
  ||z||² + ||e||² - 2 z·e through ``addmm``), so that the ids equal the official ones even where two codes are
  nearly tied, instead of the mathematically equal but differently rounded training path;
- the φ of each scale is VAR's ``PhiPartiallyShared`` choice: the nearest of K ticks to s/(S-1), the ticks
  linspace(1/(3K), 1 - 1/(3K), K) for K = 4 (the published ``share_quant_resi``) and linspace(1/(2K), 1 - 1/(2K), K)
  for every other K.

Decoding is clamped to [-1, 1] outside training, as VAR's ``fhat_to_img``/``idxBl_to_img`` are. ``compose`` is VAR's
f̂ (before ``post_quant_conv``), which is what VAR's transformer reads, area-resized, at every step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from argen.tokenizers.autoencoder import Quantization, Quantizer, Tokenizer, register_tokenizer
from argen.tokenizers.multiscale import ResidualQuantizer
from argen.tokenizers.vqgan import VQGANDecoder, VQGANEncoder

if TYPE_CHECKING:
    from argen.tokenizers import TokenizerConfig

PROJECT_KERNEL = 3  # VQVAE(quant_conv_ks=3) in VAR's vqvae.py, the published file's shape


def phi_ticks(count: int) -> np.ndarray:
    """VAR's PhiPartiallyShared/PhiNonShared ticks for K = ``count`` φ convs."""
    margin = 1 / 3 / count if count == 4 else 1 / 2 / count
    return np.linspace(margin, 1 - margin, count)


class VARQuantizer(ResidualQuantizer):
    """latent f (B, D, n, n) → one (B, s, s) grid per scale, with VAR's encoding arithmetic and φ assignment."""

    @staticmethod
    def _assign_phis(scales: int, count: int, *, shared_per_scale: bool) -> list[int]:
        ticks = phi_ticks(count)
        return [int(np.argmin(np.abs(ticks - index / max(scales - 1, 1)))) for index in range(scales)]

    def forward(self, latent: torch.Tensor, *, update: bool = False) -> Quantization:
        """VAR's ``f_to_idxBl_or_fhat`` (Algorithm 1), plus the training losses of `ResidualQuantizer`."""
        detached = latent.detach()
        rest = detached.clone()
        composed = torch.zeros_like(rest)
        weight = self.codebook.weight.detach()
        channels, last = detached.shape[1], len(self.scales) - 1
        ids, candidates = [], []
        codebook_loss = commitment_loss = latent.new_zeros(())
        for scale, side in enumerate(self.scales):
            target = F.interpolate(rest, size=(side, side), mode="area") if scale != last else rest
            flat = target.permute(0, 2, 3, 1).reshape(-1, channels)  # (B·s·s, D)
            distances = flat.square().sum(dim=1, keepdim=True) + weight.square().sum(dim=1)
            distances.addmm_(flat, weight.T, alpha=-2, beta=1)  # (B·s·s, V)
            grid = distances.argmin(dim=1).view(-1, side, side)
            codes = self.codebook.lookup(grid).permute(0, 3, 1, 2)  # (B, D, s, s)
            if scale != last:
                codes = F.interpolate(codes, size=(self.side, self.side), mode="bicubic")
            share = self.phis[self.phi_of_scale[scale]](codes.contiguous())
            composed = composed + share
            rest = rest - share.detach()
            codebook_loss = codebook_loss + F.mse_loss(composed, detached)
            commitment_loss = commitment_loss + F.mse_loss(composed.detach(), latent)
            ids.append(grid)
            candidates.append(flat)
        losses = {
            "codebook": codebook_loss / len(self.scales),
            "commitment": self.commitment * commitment_loss / len(self.scales),
        }
        quantized = latent + (composed.detach() - detached)  # straight-through: f̂'s value, f's gradient
        restarted = self.codebook.restart(ids, torch.cat(candidates)) if update else 0
        return Quantization(quantized, ids, losses, {"restarted": float(restarted)})


@register_tokenizer
class VARTokenizer(Tokenizer):
    """VAR's multi-scale VQVAE as published (``argen convert var --vae``): one grid per entry of ``scales``."""

    kind = "var-vqvae"
    method, paper, arxiv = "VAR's published multi-scale VQVAE", "VAR", "2404.02905"
    rank = 60

    def make_encoder(self, config: TokenizerConfig) -> nn.Module:
        return VQGANEncoder(config, project_kernel=PROJECT_KERNEL)

    def make_decoder(self, config: TokenizerConfig) -> nn.Module:
        return VQGANDecoder(config, project_kernel=PROJECT_KERNEL, clamp=True)

    def make_quantizer(self, config: TokenizerConfig) -> Quantizer:
        return VARQuantizer(config, self.latent_side)
