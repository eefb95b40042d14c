"""The transformer's layers: RMSNorm, attention, the SwiGLU MLP, the block that chains them and the norm before an
output head (legend: B batch, L sequence, K keys, D width).

Pre-norm blocks of attention and a SwiGLU MLP on RMSNorm, as in LlamaGen (arXiv 2406.06525), optionally modulated
by the class through AdaLN as in VAR (arXiv 2404.02905, ``AdaLNSelfAttn``): each block maps the class embedding to
a scale, a shift and a gate for both of its branches.

Each module has its own ``forward``, and `Block.forward` chains its sub-modules, so forward hooks on any of them fire
(``Attention.z`` and ``Block.mlp_out`` are parameterless ``nn.Identity`` hook points: the per-head outputs before the
output projection and the MLP's output, for `argen.interpret`). The transformer's fast path is the fused `block_step`
over gathered `BlockWeights`, which runs the same operations in the same order, so both give the same floats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from argen.model.config import TransformerConfig
from argen.model.kv_cache import KVCache
from argen.onednn import Linear, linear

# What attention writes keys and values into: a `KVCache`, or for compiled decoding (keys, values, where), the whole
# preallocated cache written at positions `where` (see `argen.samplers.engine.SamplingEngine`).
StaticSlots = tuple[Tensor, Tensor, Tensor]
Slots = KVCache | StaticSlots | None


def attend(
    h: Tensor, qkv_weight: Tensor, proj_weight: Tensor, *, heads: int, mask: Tensor | None, cache: Slots, layer: int,
    z: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:  # fmt: skip
    """Multi-head self-attention, h (B, L, D) → (B, L, D), ``mask`` (L, K) bool or None (every key visible); ``z``
    is applied to the per-head outputs (B, L, H, D/H) before the output projection (a hook point)."""
    batch, length, width = h.shape
    qkv = linear(h, qkv_weight).view(batch, length, 3, heads, width // heads)
    query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, D/heads)
    if isinstance(cache, KVCache):
        key, value = cache.update(layer, key, value)
    elif cache is not None:
        # Compiled decoding: the whole preallocated cache, written at positions `where` and attended in full under
        # the mask, so that every call of a given length has the same shapes.
        keys, values, where = cache
        keys[layer].index_copy_(2, where, key.to(keys.dtype))
        values[layer].index_copy_(2, where, value.to(values.dtype))
        key, value = keys[layer].to(query.dtype), values[layer].to(query.dtype)
    h = F.scaled_dot_product_attention(query, key, value, attn_mask=mask).transpose(1, 2)  # (B, L, heads, D/heads)
    if z is not None:
        h = z(h)
    return linear(h.reshape(batch, length, width), proj_weight)  # (B, L, D)


def swiglu(h: Tensor, gate_up_weight: Tensor, down_weight: Tensor) -> Tensor:
    """The SwiGLU MLP (Shazeer, arXiv 2002.05202), h (B, L, D) → (B, L, D): down(silu(gate) · up)."""
    gate, up = linear(h, gate_up_weight).chunk(2, dim=-1)
    return linear(F.silu(gate) * up, down_weight)


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich, arXiv 1910.07467); ``weight`` is None under AdaLN (the class sets the scale)."""

    def __init__(self, width: int, *, eps: float, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) → (..., D)."""
        return F.rms_norm(x, (x.shape[-1],), self.weight, eps=self.eps)


class Attention(nn.Module):
    """Multi-head self-attention without biases: ``qkv`` in, ``proj`` out."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.heads = config.heads
        self.qkv = Linear(config.width, 3 * config.width, bias=False)
        self.proj = Linear(config.width, config.width, bias=False)
        self.z = nn.Identity()  # hook point: the per-head outputs (B, L, H, D/H); no parameters, checkpoints unchanged

    def forward(self, h: Tensor, *, mask: Tensor | None = None, cache: Slots = None, layer: int = 0) -> Tensor:
        """(B, L, D) → (B, L, D); ``cache`` and ``layer``: where earlier keys and values are read and these written."""
        return attend(h, self.qkv.weight, self.proj.weight, heads=self.heads, mask=mask, cache=cache, layer=layer,
                      z=self.z)  # fmt: skip


class SwiGLU(nn.Module):
    """The SwiGLU MLP: ``gate_up`` (both input projections in one matmul) and ``down``."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.gate_up = Linear(config.width, 2 * config.hidden, bias=False)
        self.down = Linear(config.hidden, config.width, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        """(B, L, D) → (B, L, D)."""
        return swiglu(h, self.gate_up.weight, self.down.weight)


class BlockWeights(NamedTuple):
    """What `block_step` reads of a `Block`: its weights, gathered once (per call in training, per generation in
    sampling), and the numbers around them."""

    attention_norm: Tensor | None  # None with AdaLN (the class sets scale and shift)
    qkv: Tensor
    proj: Tensor
    mlp_norm: Tensor | None
    gate_up: Tensor
    down: Tensor
    heads: int
    eps: float
    dropout: float  # 0 outside training


# The six AdaLN terms of a block, each (B, 1, D): gate1, gate2, scale1, scale2, shift1, shift2.
BlockTerms = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def block_step(
    x: Tensor, weights: BlockWeights, terms: BlockTerms | None, mask: Tensor | None, cache: Slots, layer: int
) -> Tensor:
    """One block, pre-norm attention + SwiGLU: x (B, L, D) → (B, L, D); ``terms`` from `Block.modulate`; ``mask``
    (L, K) bool, or None when every key is visible to every query.

    A function of the gathered weights rather than a chain of submodule calls: at batch 1 a block is ~20 small
    operations, and calling its norms, attention, MLP and four linears as modules cost ~20 µs of a ~100 µs block
    (measured when this was written: one cached 4-position call of the shipped next-scale model with guidance went
    from 405 to 338 µs), which a raster image pays 49 times.
    """
    width = x.shape[-1]
    h = F.rms_norm(x, (width,), weights.attention_norm, eps=weights.eps)
    if terms is not None:
        gate1, gate2, scale1, scale2, shift1, shift2 = terms
        # addcmul(a, b, c) = a + b·c in one pass over memory (with the norm: 1.2× at batch 64, bench/kernels.py).
        h = torch.addcmul(shift1, h, scale1)
    h = attend(h, weights.qkv, weights.proj, heads=weights.heads, mask=mask, cache=cache, layer=layer)
    if weights.dropout:
        h = F.dropout(h, weights.dropout)
    x = x + h if terms is None else torch.addcmul(x, h, gate1)
    h = F.rms_norm(x, (width,), weights.mlp_norm, eps=weights.eps)
    if terms is not None:
        h = torch.addcmul(shift2, h, scale2)
    h = swiglu(h, weights.gate_up, weights.down)
    if weights.dropout:
        h = F.dropout(h, weights.dropout)
    return x + h if terms is None else torch.addcmul(x, h, gate2)


class Block(nn.Module):
    """Pre-norm attention + SwiGLU; with AdaLN, the class sets each branch's norm scale, shift and output gate."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        affine = not config.adaln
        self.heads = config.heads
        self.attention_norm = RMSNorm(config.width, eps=config.norm_eps, affine=affine)
        self.attention = Attention(config)
        self.mlp_norm = RMSNorm(config.width, eps=config.norm_eps, affine=affine)
        self.mlp = SwiGLU(config)
        self.mlp_out = nn.Identity()  # hook point: the MLP's output (B, L, D) before the residual add
        self.modulation = Linear(config.width, 6 * config.width) if config.adaln else None
        self.dropout = nn.Dropout(config.dropout)

    def modulate(self, condition: Tensor | None) -> BlockTerms | None:
        """silu(class embedding) (B, D) → the six (B, 1, D) AdaLN terms of `forward` (gates as 1 + g, scales as
        1 + s); None without AdaLN. Depends on the class only, so a generation computes it once."""
        if self.modulation is None:
            return None
        # VAR's AdaLNSelfAttn; gates are 1 + g rather than g, so that the zero-initialised modulation starts as a
        # plain pre-norm block instead of an identity.
        gate1, gate2, scale1, scale2, shift1, shift2 = self.modulation(condition).unsqueeze(1).chunk(6, dim=-1)
        return 1 + gate1, 1 + gate2, 1 + scale1, 1 + scale2, shift1, shift2

    def weights(self) -> BlockWeights:
        return BlockWeights(
            self.attention_norm.weight, self.attention.qkv.weight, self.attention.proj.weight, self.mlp_norm.weight,
            self.mlp.gate_up.weight, self.mlp.down.weight, self.heads, self.attention_norm.eps,
            self.dropout.p if self.training else 0.0,
        )  # fmt: skip

    def forward(
        self, x: Tensor, terms: BlockTerms | None = None, *, mask: Tensor | None = None, cache: Slots = None,
        layer: int = 0,
    ) -> Tensor:  # fmt: skip
        """(B, L, D) → (B, L, D): `block_step`'s operations in its order (the same floats), through the sub-modules so
        that their forward hooks fire; the transformer takes this path only when a hook is registered."""
        h = self.attention_norm(x)
        if terms is not None:
            gate1, gate2, scale1, scale2, shift1, shift2 = terms
            h = torch.addcmul(shift1, h, scale1)
        h = self.attention(h, mask=mask, cache=cache, layer=layer)
        if self.training and self.dropout.p:
            h = self.dropout(h)
        x = x + h if terms is None else torch.addcmul(x, h, gate1)
        h = self.mlp_norm(x)
        if terms is not None:
            h = torch.addcmul(shift2, h, scale2)
        h = self.mlp_out(self.mlp(h))
        if self.training and self.dropout.p:
            h = self.dropout(h)
        return x + h if terms is None else torch.addcmul(x, h, gate2)


class HeadNorm(nn.Module):
    """The norm before an output head; with AdaLN the class sets its scale and shift (VAR's AdaLNBeforeHead)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.norm = RMSNorm(config.width, eps=config.norm_eps, affine=not config.adaln)
        self.modulation = Linear(config.width, 2 * config.width) if config.adaln else None

    def modulate(self, condition: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """silu(class embedding) (B, D) → (1 + scale, shift), each (B, 1, D); None without AdaLN."""
        if self.modulation is None:
            return None
        scale, shift = self.modulation(condition).unsqueeze(1).chunk(2, dim=-1)
        return 1 + scale, shift

    def forward(self, x: Tensor, terms: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """(B, L, D) → the normed (and modulated) features (B, L, D)."""
        return head_features(x, self.norm.weight, terms, eps=self.norm.eps)


def head_features(x: Tensor, norm_weight: Tensor | None, terms: tuple[Tensor, Tensor] | None, *, eps: float) -> Tensor:
    """The features an output head reads, (B, L, D) → (B, L, D): RMSNorm, then AdaLN's scale and shift."""
    features = F.rms_norm(x, (x.shape[-1],), norm_weight, eps=eps)
    if terms is not None:
        scale, shift = terms
        features = torch.addcmul(shift, features, scale)
    return features


__all__ = [
    "Attention",
    "Block",
    "BlockTerms",
    "BlockWeights",
    "HeadNorm",
    "RMSNorm",
    "Slots",
    "StaticSlots",
    "SwiGLU",
    "attend",
    "block_step",
    "head_features",
    "swiglu",
]
