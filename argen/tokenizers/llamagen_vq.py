"""LlamaGen's published VQ tokenizer (VQ-16, ``vq_ds16_c2i.pt``): "Autoregressive Model Beats Diffusion: Llama for
Scalable Image Generation" (Sun et al., arXiv 2406.06525), §2.1.

The network is the VQGAN encoder/decoder of `vqgan` (LlamaGen's separate q/k/v attention convs are stored as one
stacked conv); the quantizer is argen's `vq.VectorQuantizer` (1×1 projection to ``code_dim`` = 8 channels,
l2-normalised codes, 1×1 projection back), with encoding in LlamaGen's own arithmetic: channels-last vectors
normalised, distances ||z||² + ||e||² - 2 z·e to the normalised codebook, argmin. It ranks codes as the cosine
argmax of `vq` does, but rounds as the official code, so nearly tied codes resolve to the official ids.
Decoding is not clamped (LlamaGen's ``decode_code`` is not either).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from argen.tokenizers.autoencoder import Quantization, Quantizer, Tokenizer, register_tokenizer
from argen.tokenizers.vq import VectorQuantizer
from argen.tokenizers.vqgan import VQGANDecoder, VQGANEncoder

if TYPE_CHECKING:
    from argen.tokenizers import TokenizerConfig


class LlamaGenQuantizer(VectorQuantizer):
    """latent (B, D, h, w) → one (B, h, w) grid, by LlamaGen's ``VectorQuantizer.forward``."""

    def forward(self, latent: torch.Tensor, *, update: bool = False) -> Quantization:
        projected = self.project_in(latent)  # (B, d, h, w)
        batch, dim, height, width = projected.shape
        flat = F.normalize(projected.permute(0, 2, 3, 1).contiguous().view(-1, dim), dim=-1)  # (B·h·w, d)
        codes_table = F.normalize(self.codebook.weight.detach(), dim=-1)  # (V, d)
        distances = (
            flat.square().sum(dim=1, keepdim=True) + codes_table.square().sum(dim=1) - 2 * (flat @ codes_table.T)
        )
        ids = distances.argmin(dim=1).view(batch, height, width)
        z = flat.view(batch, height, width, dim).permute(0, 3, 1, 2)  # (B, d, h, w), unit vectors
        codes = self.codebook.lookup(ids).permute(0, 3, 1, 2)
        losses = {
            "codebook": F.mse_loss(codes, z.detach()),
            "commitment": self.commitment * F.mse_loss(z, codes.detach()),
        }
        straight_through = z + (codes - z).detach()
        restarted = self.codebook.restart([ids], flat.detach()) if update else 0
        return Quantization(self.project_out(straight_through), [ids], losses, {"restarted": float(restarted)})


@register_tokenizer
class LlamaGenTokenizer(Tokenizer):
    """LlamaGen's VQ-16 as published (``argen convert llamagen --vq``): one grid, l2-normalised codes."""

    kind = "llamagen-vq"
    method, paper, arxiv = "LlamaGen's published VQGAN tokenizer", "LlamaGen", "2406.06525"
    rank = 61

    def make_encoder(self, config: TokenizerConfig) -> nn.Module:
        return VQGANEncoder(config)

    def make_decoder(self, config: TokenizerConfig) -> nn.Module:
        return VQGANDecoder(config)

    def make_quantizer(self, config: TokenizerConfig) -> Quantizer:
        return LlamaGenQuantizer(config, self.latent_side)
