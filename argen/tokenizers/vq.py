"""Nearest-code vector quantization with l2-normalised low-dimensional codes, after LlamaGen:
"Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation" (Sun et al., arXiv 2406.06525),
§2.1, which takes the factorized, l2-normalised codes from ViT-VQGAN (Yu et al., arXiv 2110.04627).

The latent (B, D, h, w) is projected to ``code_dim`` (8) channels by a 1×1 conv, l2-normalised, and each
vector replaced by the code of highest cosine similarity; a 1×1 conv projects it back to D. Low-dimensional
unit-norm codes make nearest-neighbour search well conditioned, which is what lets LlamaGen use most of its
codebook without EMA tricks.

Gradients: straight-through estimator (the decoder's gradient is copied onto the encoder output), plus the
VQ-VAE loss (van den Oord et al., arXiv 1711.00937, Eq. 3): ||sg(z) - q||² moves codes, β·||z - sg(q)||² keeps
the encoder committed.

Dead-code restart (the "random restarts" of Jukebox, Dhariwal et al., arXiv 2005.00341): a code
that no token chose for ``restart_after`` training steps is moved onto a random encoder output of the current
step. Codes start as "dead", so the first step also gives a data-dependent initialisation. With it every one
of 1024 codes occurs on the Fashion-MNIST test set after a few hundred steps. `Codebook` is shared with the
multi-scale and frequency quantizers (there without normalisation: residuals need magnitudes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from argen.errors import ArgenError
from argen.tokenizers.autoencoder import Quantization, Quantizer, Tokenizer, register_tokenizer

if TYPE_CHECKING:
    from argen.tokenizers import TokenizerConfig


class Codebook(nn.Module):
    """K codes of dimension d: nearest-neighbour search, lookup, and dead-code restart.

    ``normalized=True`` compares and returns unit vectors (cosine similarity); otherwise Euclidean distance on the
    raw vectors. ``idle_steps`` counts, per code, the training steps since a token last chose it; it is an
    integer buffer, so checkpoints resume restarts exactly and weight EMAs copy it instead of averaging it.
    """

    def __init__(self, size: int, dim: int, *, normalized: bool, restart_after: int, scale: float = 1.0):
        super().__init__()
        self.size, self.dim, self.normalized, self.restart_after = size, dim, normalized, restart_after
        self.weight = nn.Parameter(torch.randn(size, dim) * scale)
        self.register_buffer("idle_steps", torch.full((size,), restart_after, dtype=torch.long))

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) → codes (..., d). Gathers rows before normalising, so restarts never touch saved tensors."""
        codes = F.embedding(ids, self.weight)
        return F.normalize(codes, dim=-1) if self.normalized else codes

    @torch.no_grad()
    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors (N, d) → ids (N,) of the closest codes (cosine if normalized, else Euclidean)."""
        codes = self.weight.detach()
        if self.normalized:
            return (F.normalize(vectors, dim=-1) @ F.normalize(codes, dim=-1).T).argmax(dim=1)
        distances = codes.square().sum(1) - 2 * vectors @ codes.T  # ||v||² is the same for every code
        return distances.argmin(dim=1)

    @torch.no_grad()
    def restart(self, ids: list[torch.Tensor], candidates: torch.Tensor) -> int:
        """Count this step's usage and move codes idle for ``restart_after`` steps onto random ``candidates`` (N, d).

        Called after the step's lookups: rows of dead codes received no gradient this step (no token chose
        them), so rewriting them in place cannot corrupt the backward pass. Under DDP the counts are summed over
        ranks and rank 0's new codes are broadcast, so every replica keeps the same codebook.
        """
        if self.restart_after <= 0:
            return 0
        counts = torch.bincount(torch.cat([grid.reshape(-1) for grid in ids]), minlength=self.size)
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(counts)
        self.idle_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.idle_steps >= self.restart_after).nonzero().squeeze(1)
        if dead.numel() == 0 or candidates.shape[0] == 0:
            return 0
        picks = candidates[torch.randint(candidates.shape[0], (dead.numel(),), device=candidates.device)].float()
        # A little noise so that two codes restarted onto the same vector do not stay exact twins.
        noise = torch.randn_like(picks) * (picks.std() * 1e-2 + 1e-6)
        self.weight.data[dead] = picks + noise
        self.idle_steps[dead] = 0
        if distributed:
            dist.broadcast(self.weight.data, src=0)
        return int(dead.numel())


class VectorQuantizer(Quantizer):
    """latent (B, D, h, w) → one (B, h, w) grid of ids into ``codebook_size`` unit-norm codes of ``code_dim``."""

    def __init__(self, config: TokenizerConfig, side: int):
        super().__init__()
        if config.codebook_size < 2 or config.code_dim < 1:
            raise ArgenError(
                f"vq needs codebook_size >= 2 and code_dim >= 1, got {config.codebook_size} and {config.code_dim}"
            )
        self.codebook_size, self.embed_dim = config.codebook_size, config.code_dim
        self.grid_shapes = [(side, side)]
        self.commitment = config.commitment
        self.project_in = nn.Conv2d(config.latent_dim, config.code_dim, 1)  # LlamaGen's quant_conv
        self.project_out = nn.Conv2d(config.code_dim, config.latent_dim, 1)  # LlamaGen's post_quant_conv
        self.codebook = Codebook(
            config.codebook_size, config.code_dim, normalized=True, restart_after=config.restart_after
        )

    def forward(self, latent: torch.Tensor, *, update: bool = False) -> Quantization:
        z = F.normalize(self.project_in(latent), dim=1)  # (B, d, h, w), unit vectors
        batch, dim, height, width = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, dim)  # (B·h·w, d)
        ids = self.codebook.nearest(flat).view(batch, height, width)
        codes = self.codebook.lookup(ids).permute(0, 3, 1, 2)  # (B, d, h, w)
        losses = {
            "codebook": F.mse_loss(codes, z.detach()),  # VQ-VAE Eq. 3, second term
            "commitment": self.commitment * F.mse_loss(z, codes.detach()),  # VQ-VAE Eq. 3, third term
        }
        straight_through = z + (codes - z).detach()
        restarted = self.codebook.restart([ids], flat.detach()) if update else 0
        return Quantization(self.project_out(straight_through), [ids], losses, {"restarted": float(restarted)})

    def embed(self, ids: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.codebook.lookup(ids[0]).permute(0, 3, 1, 2)]

    def compose(self, ids: list[torch.Tensor], upto: int) -> torch.Tensor:
        codes = self.embed(ids[:1])[0]
        if upto == 0:
            shape = (codes.shape[0], self.project_out.out_channels, *codes.shape[-2:])
            return torch.zeros(shape, device=codes.device, dtype=codes.dtype)
        return self.project_out(codes)

    def codes_to_ids(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        batch, dim, height, width = codes[0].shape
        return [self.codebook.nearest(codes[0].permute(0, 2, 3, 1).reshape(-1, dim)).view(batch, height, width)]


@register_tokenizer
class VQTokenizer(Tokenizer):
    """Single-grid tokenizer with LlamaGen's l2-normalised low-dimensional VQ."""

    kind = "vq"
    method, paper, arxiv = "nearest-code VQ", "LlamaGen", "2406.06525"
    rank = 10

    def make_quantizer(self, config: TokenizerConfig) -> Quantizer:
        return VectorQuantizer(config, self.latent_side)
