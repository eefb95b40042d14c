"""The one decoder-only transformer every order trains and samples (legend: B batch, L sequence, V vocabulary,
D width, F feature width, H output heads).

Pre-norm blocks of attention and a SwiGLU MLP on RMSNorm, as in LlamaGen (arXiv 2406.06525), optionally modulated
by the class through AdaLN as in VAR (arXiv 2404.02905, ``AdaLNSelfAttn``): each block maps the class embedding to
a scale, a shift and a gate for both of its branches. What the transformer needs from an order is a `Layout`:

- inputs are ids (B, L) (``feature_dim == 0``; an embedding table of V + 1 rows, the last one the start token) or
  features (B, L, F) (a linear projection, VAR's ``word_embed``). Positions fed at step 0 are start tokens either way:
  the start vector plus the class embedding (LlamaGen's class token, VAR's ``sos``).
- position embeddings are learned tables for the step, the row and the column, summed. Rows and columns are scaled
  to a ``max_grid`` table by cell centre, so a 1×1 grid sits at the centre of a 7×7 one and grids of different
  sizes share the table sensibly (VAR instead learns one table per scale, which fixes the scales).
- attention uses ``F.scaled_dot_product_attention`` with an explicit boolean block-causal mask: position p sees q
  iff step(q) ≤ step(p). With a `KVCache` the keys and values of earlier calls are reused and the mask is built
  from the cached steps, so feeding a sequence step by step gives the same outputs as one full forward pass.
- classes: index ``num_classes`` is the null class of classifier-free guidance; in training a label is replaced by
  it with probability ``class_dropout``. An unconditional model (``num_classes == 0``) always uses the null class.
- output: logits (B, L, V); with ``num_heads_out = H > 1`` (NAR's dimension-oriented heads, arXiv 2503.10696),
  (B, L, H, V), where head k > 0 reads k extra transformer blocks stacked on the main ones, as NAR's vertical head
  reads one extra block (its ``medusa`` layer). How the heads' outputs become target logits is the order's business.

The model holds no sampling state: a sampler creates a cache with `Transformer.new_cache` and passes it in. What the
model does keep across generations depends on the labels and the weights alone (the class context of
`Transformer._context`, the first call of `Transformer._start_key`), checked against a stamp of the weights, so it
never changes what is sampled.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from argen.errors import ArgenError
from argen.onednn import Linear, linear
from argen.orders.base import block_causal_mask
from argen.samplers.logits import guide

if TYPE_CHECKING:
    from argen.orders.base import Layout


@dataclass
class TransformerConfig:
    """Everything that defines a transformer; plain JSON types, since it is written to ``config.json``.

    ``vocab_size``, ``feature_dim``, ``num_heads_out``, ``max_steps`` and ``max_grid`` are dictated by the order
    and the tokenizer: take them from ``order.model_settings(tokenizer)``.
    """

    vocab_size: int = 1024
    num_classes: int = 0  # 0: unconditional
    width: int = 192
    depth: int = 4
    heads: int = 6
    mlp_ratio: float = 4.0  # SwiGLU hidden width = 2/3 · mlp_ratio · width, rounded up to a multiple of 8
    class_dropout: float = 0.1
    feature_dim: int = 0  # 0: the inputs are ids
    max_steps: int = 64  # rows of the step embedding table
    max_grid: int = 16  # rows of the row and column embedding tables
    adaln: bool = True  # class-conditional AdaLN in every block and before the heads (VAR)
    dropout: float = 0.0  # on the attention and MLP branches
    num_heads_out: int = 1  # 2 for NAR's horizontal and vertical heads
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        positive = ("vocab_size", "width", "depth", "heads", "max_steps", "max_grid", "num_heads_out")
        for name in positive:
            if getattr(self, name) < 1:
                raise ArgenError(f"transformer {name} must be at least 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ArgenError(f"transformer width {self.width} is not divisible by heads {self.heads}")
        if self.num_classes < 0 or self.feature_dim < 0:
            raise ArgenError("transformer num_classes and feature_dim must be 0 or more")
        if not 0.0 <= self.class_dropout < 1.0 or not 0.0 <= self.dropout < 1.0:
            raise ArgenError("transformer class_dropout and dropout must be in [0, 1)")

    @property
    def hidden(self) -> int:
        return 8 * math.ceil(2 * self.mlp_ratio * self.width / 3 / 8)


# Architecture presets; the order and the tokenizer supply the rest (see TransformerConfig). Parameter counts are
# for vocab 1024, 10 classes, AdaLN on and the default tables: tiny ≈ 50k (at vocab 64, for tests), 1m ≈ 0.95M,
# 3m ≈ 3.1M, 10m ≈ 10M.
PRESETS: dict[str, dict[str, int | float]] = {
    "tiny": {"width": 32, "depth": 2, "heads": 2},
    "1m": {"width": 112, "depth": 3, "heads": 4},
    "3m": {"width": 192, "depth": 4, "heads": 6},
    "10m": {"width": 320, "depth": 5, "heads": 5},
}


def _same_labels(first: Tensor | None, second: Tensor | None) -> bool:
    if first is None or second is None:
        return first is None and second is None
    return first.shape == second.shape and bool(torch.equal(first, second.to(first.device)))


def preset_config(name: str, **fields: int | float | bool) -> TransformerConfig:
    """The config of preset ``name`` with ``fields`` set (typically num_classes and order.model_settings(...))."""
    if name not in PRESETS:
        raise ArgenError(f"unknown transformer preset {name!r}: choose one of {', '.join(PRESETS)}")
    return TransformerConfig(**{**PRESETS[name], **fields})


class KVCache:
    """Keys and values of the sequence positions fed so far, per layer, and their steps.

    Preallocated for ``capacity`` positions; a forward pass writes its positions after the cached ones and then
    advances ``length``. `rollback` forgets everything after a given length (speculative decoding needs it).

    A cache lives for one generation, so it also holds what the transformer computes once per generation rather
    than once per call (``memo``: the class conditioning and AdaLN modulations, the position embeddings), and a host
    copy of the cached steps, so that deciding whether a call needs an attention mask never waits for the device.
    """

    def __init__(
        self,
        *,
        layers: int,
        batch: int,
        heads: int,
        head_dim: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        shape = (layers, batch, heads, capacity, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.steps = torch.zeros(capacity, dtype=torch.long, device=device)
        self.host_steps = torch.zeros(capacity, dtype=torch.long)
        self.length = 0
        self.memo: dict[str, object] = {}

    @property
    def batch(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def update(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Write (B, heads, n, head_dim) keys and values after the cached ones; return all of them for ``layer``."""
        end = self.length + keys.shape[2]
        if end > self.capacity:
            raise ArgenError(f"KV cache holds {self.capacity} positions, {end} were fed: make a larger one")
        if keys.shape[0] != self.batch:
            raise ArgenError(f"KV cache was made for batch {self.batch}, got {keys.shape[0]}")
        self.keys[layer, :, :, self.length : end] = keys
        self.values[layer, :, :, self.length : end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, steps: Tensor, host_steps: Tensor | None = None) -> None:
        """Commit the positions just written by every layer, with their steps (n,) (``host_steps``: the same on the
        CPU, when the caller has them, which saves a device-to-host copy)."""
        end = self.length + steps.numel()
        self.steps[self.length : end] = steps
        self.host_steps[self.length : end] = steps.cpu() if host_steps is None else host_steps
        self.length = end

    @property
    def last_step(self) -> int:
        """The step of the newest cached position (steps never decrease along a layout), -1 when empty."""
        return int(self.host_steps[self.length - 1]) if self.length else -1

    def rollback(self, length: int) -> None:
        """Keep the first ``length`` cached positions and forget the rest."""
        if not 0 <= length <= self.length:
            raise ArgenError(f"cannot roll a KV cache of length {self.length} back to {length}")
        self.length = length


class RMSNorm(nn.Module):
    """An RMSNorm's parameters (``weight``, None under AdaLN) and ``eps``; the computation is `block_step`'s and
    `Transformer._body`'s."""

    def __init__(self, width: int, *, eps: float, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width)) if affine else None


class Attention(nn.Module):
    """The attention's parameters (``qkv``, ``proj``); the computation is `block_step`'s."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.qkv = Linear(config.width, 3 * config.width, bias=False)
        self.proj = Linear(config.width, config.width, bias=False)


class SwiGLU(nn.Module):
    """The SwiGLU MLP's parameters (``gate_up``, ``down``); the computation is `block_step`'s."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.gate_up = Linear(config.width, 2 * config.hidden, bias=False)
        self.down = Linear(config.hidden, config.width, bias=False)


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


def block_step(
    x: Tensor,
    weights: BlockWeights,
    terms: tuple[Tensor, ...] | None,
    mask: Tensor | None,
    cache: KVCache | tuple | None,
    layer: int,
) -> Tensor:
    """One block, pre-norm attention + SwiGLU: x (B, L, D) → (B, L, D); ``terms`` from `Block.modulate`; ``mask``
    (L, K) bool, or None when every key is visible to every query.

    A function of the weights rather than a chain of submodule calls: at batch 1 a block is ~20 small operations,
    and calling its norms, attention, MLP and four linears as modules cost ~20 µs of a ~100 µs block (measured when
    this was written: one cached 4-position call of the shipped next-scale model with guidance went from 405 to
    338 µs), which a raster image pays 49 times.
    """
    batch, length, width = x.shape
    h = F.rms_norm(x, (width,), weights.attention_norm, eps=weights.eps)
    if terms is not None:
        gate1, gate2, scale1, scale2, shift1, shift2 = terms
        # addcmul(a, b, c) = a + b·c in one pass over memory (with the norm: 1.2× at batch 64, bench/kernels.py).
        h = torch.addcmul(shift1, h, scale1)
    qkv = linear(h, weights.qkv).view(batch, length, 3, weights.heads, width // weights.heads)
    query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, D/heads)
    if isinstance(cache, KVCache):
        key, value = cache.update(layer, key, value)
    elif cache is not None:
        # Compiled decoding: (keys, values, where), the whole preallocated cache written at positions `where` and
        # attended in full under the mask, so that every call of a given length has the same shapes.
        keys, values, where = cache
        keys[layer].index_copy_(2, where, key.to(keys.dtype))
        values[layer].index_copy_(2, where, value.to(values.dtype))
        key, value = keys[layer].to(query.dtype), values[layer].to(query.dtype)
    h = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    h = linear(h.transpose(1, 2).reshape(batch, length, width), weights.proj)  # (B, L, D)
    if weights.dropout:
        h = F.dropout(h, weights.dropout)
    x = x + h if terms is None else torch.addcmul(x, h, gate1)
    h = F.rms_norm(x, (width,), weights.mlp_norm, eps=weights.eps)
    if terms is not None:
        h = torch.addcmul(shift2, h, scale2)
    gate, up = linear(h, weights.gate_up).chunk(2, dim=-1)
    h = linear(F.silu(gate) * up, weights.down)
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
        self.modulation = Linear(config.width, 6 * config.width) if config.adaln else None
        self.dropout = nn.Dropout(config.dropout)

    def modulate(self, condition: Tensor | None) -> tuple[Tensor, ...] | None:
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
        self,
        x: Tensor,
        terms: tuple[Tensor, ...] | None,
        mask: Tensor | None,
        cache: KVCache | tuple | None,
        layer: int,
    ) -> Tensor:
        """`block_step` with this block's weights."""
        return block_step(x, self.weights(), terms, mask, cache, layer)


class HeadNorm(nn.Module):
    """The norm before an output head; with AdaLN the class sets its scale and shift (VAR's AdaLNBeforeHead). The
    computation is in `Transformer._body`."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.norm = RMSNorm(config.width, eps=config.norm_eps, affine=not config.adaln)
        self.modulation = Linear(config.width, 2 * config.width) if config.adaln else None

    def modulate(self, condition: Tensor | None) -> tuple[Tensor, ...] | None:
        """silu(class embedding) (B, D) → (1 + scale, shift), each (B, 1, D); None without AdaLN."""
        if self.modulation is None:
            return None
        scale, shift = self.modulation(condition).unsqueeze(1).chunk(2, dim=-1)
        return 1 + scale, shift


class Transformer(nn.Module):
    """Decoder-only transformer over an order's sequence: inputs + labels + layout → logits."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        width = config.width
        if config.feature_dim:
            self.feature_proj = Linear(config.feature_dim, width)
            self.start = nn.Parameter(torch.zeros(width))
        else:
            self.token_embed = nn.Embedding(config.vocab_size + 1, width)  # row vocab_size: the start token
        self.class_embed = nn.Embedding(config.num_classes + 1, width)  # row num_classes: the null class
        self.step_embed = nn.Embedding(config.max_steps, width)
        self.row_embed = nn.Embedding(config.max_grid, width)
        self.col_embed = nn.Embedding(config.max_grid, width)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.head_blocks = nn.ModuleList(Block(config) for _ in range(config.num_heads_out - 1))
        self.head_norms = nn.ModuleList(HeadNorm(config) for _ in range(config.num_heads_out))
        # The output layers, one per head of num_heads_out (config.heads is the attention heads).
        self.output_heads = nn.ModuleList(
            Linear(width, config.vocab_size, bias=False) for _ in range(config.num_heads_out)
        )
        self._init_weights()
        self._compiled: Callable | None = None  # set by `compile`
        # Sampling contexts kept across generations: (batch, device, labels, layout id) → (layout, weights stamp,
        # context); see `_context`.
        self._contexts: dict[tuple, tuple] = {}
        # Step-0 calls kept across generations: (request key) → (layout, weights stamp, (keys, values, outputs)); see
        # `_start_key`.
        self._starts: dict[tuple, tuple] = {}

    # Parameter names of earlier versions → today's: checkpoints written before the rename still load.
    RENAMED_PREFIXES = {"heads.": "output_heads."}

    @classmethod
    def upgrade_state_dict(cls, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """``state_dict`` with parameter names of earlier versions mapped to today's (Transformer.heads was the
        output layers, now ``output_heads``); the checkpoint loaders call this before they check names."""
        upgraded = {}
        for name, tensor in state_dict.items():
            old = next((prefix for prefix in cls.RENAMED_PREFIXES if name.startswith(prefix)), None)
            upgraded[cls.RENAMED_PREFIXES[old] + name[len(old) :] if old else name] = tensor
        return upgraded

    def _init_weights(self, std: float = 0.02) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        if self.config.feature_dim:
            nn.init.trunc_normal_(self.start, std=std)
        # GPT-2 / VAR: the branches that write into the residual stream shrink with depth.
        for block in [*self.blocks, *self.head_blocks]:
            block.attention.proj.weight.data.div_(math.sqrt(2 * self.config.depth))
            block.mlp.down.weight.data.div_(math.sqrt(2 * self.config.depth))
        for module in self.modules():
            if isinstance(module, (Block, HeadNorm)) and module.modulation is not None:
                nn.init.zeros_(module.modulation.weight)
                nn.init.zeros_(module.modulation.bias)

    @property
    def num_layers(self) -> int:
        """Blocks that keep keys and values: the main ones plus those of the extra heads."""
        return self.config.depth + self.config.num_heads_out - 1

    def new_cache(
        self, batch: int, *, capacity: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty KV cache for ``batch`` sequences of up to ``capacity`` positions."""
        reference = self.class_embed.weight
        if dtype is None and torch.is_autocast_enabled(reference.device.type):
            dtype = torch.get_autocast_dtype(reference.device.type)  # keys and values come out of autocast linears
        return KVCache(
            layers=self.num_layers,
            batch=batch,
            heads=self.config.heads,
            head_dim=self.config.width // self.config.heads,
            capacity=capacity,
            dtype=dtype or reference.dtype,
            device=device or reference.device,
        )

    def forward(
        self,
        inputs: Tensor,
        labels: Tensor | None = None,
        *,
        layout: Layout,
        index: Tensor | None = None,
        cache: KVCache | None = None,
        guidance: float | Tensor | None = None,
    ) -> Tensor:
        """Logits of the fed sequence positions.

        Args:
            inputs: (B, L) ids in [0, V] (V = start) or (B, L, F) features.
            labels: (B,) classes in [0, num_classes] (num_classes = null), or None for the null class.
            layout: the order's layout for the tokenizer's grids.
            index: (L,) which layout positions ``inputs`` are (default: the first L); with a cache, those after
                the cached ones, e.g. ``layout.inputs_of_step[s]``.
            cache: a `KVCache` to read earlier positions from and append these to.
            guidance: classifier-free guidance scale s inside the model, a float or (L,) per fed position: the 2B
                rows are B conditional ones then their B null-class ones, and the result is the guided logits
                uncond + s · (cond - uncond) of the B images. The output layers are linear without a bias, so
                guiding their inputs (the head-normed features) gives the guided logits at half the output
                layers' cost (B rows instead of 2B through the V-wide matmul); equal to guiding the logits up to
                float rounding.

        Returns:
            (B, L, V) logits, or (B, L, H, V) with H = num_heads_out > 1 (B: the guided images with ``guidance``).
        """
        config = self.config
        self._check(inputs, layout)
        batch, length = inputs.shape[:2]
        device = inputs.device
        index = torch.arange(length) if index is None else index.cpu()
        host_steps = layout.step_of[index]  # (L,) on the host: masks and start slots are decided without a sync
        steps = host_steps.to(device)
        first_step, last_step = int(host_steps[0]), int(host_steps[-1])
        start_key = self._start_key(inputs, labels, layout, index, cache, guidance) if last_step == 0 else None
        if start_key is not None:
            kept = self._starts.get(start_key)
            if kept is not None and kept[0] is layout and kept[1] == self._weights_stamp(cache):
                keys, values, outputs = kept[2]
                cache.keys[:, :, :, :length] = keys
                cache.values[:, :, :, :length] = values
                cache.advance(steps, host_steps)
                return outputs.clone()
        condition, block_terms, head_terms, positions, weights = self._context(labels, batch, device, layout, cache)

        if config.feature_dim:
            x = self.feature_proj(inputs)  # (B, L, D)
        else:
            x = self.token_embed(inputs)  # (B, L, D)
        if first_step == 0:  # steps never decrease, so only a call that starts at step 0 has start slots
            is_start = (steps == 0)[None, :, None]  # (1, L, 1)
            if config.feature_dim:
                x = torch.where(is_start, self.start, x)
            x = x + is_start * condition[:, None, :]
        x = x + positions(index)

        slots: KVCache | tuple | None = cache
        if cache is None:
            mask = block_causal_mask(steps)
        elif self._compiled is not None and int(index[0]) == cache.length:
            slots, mask = self._static_slots(cache, layout, index, host_steps, device)
        elif first_step == last_step and cache.last_step <= first_step:
            mask = None  # one step after the cached ones: every query sees every key (SDPA's unmasked kernel)
        else:
            mask = block_causal_mask(steps, torch.cat([cache.steps[: cache.length], steps]))
        if isinstance(guidance, Tensor):
            # (1, L, 1) per position, never below float32 (a bf16 scale would be off in its third digit)
            guidance = guidance.to(device=device, dtype=torch.promote_types(x.dtype, torch.float32)).view(1, -1, 1)
        elif guidance is not None and self._compiled is not None:
            guidance = torch.tensor(guidance, device=device)  # a tensor, not a constant: no graph per scale
        if guidance is not None and batch % 2:
            raise ArgenError(f"guidance needs 2B rows (conditional, then null class), got {batch}")
        body = self._body if self._compiled is None else self._compiled
        outputs = body(x, block_terms, head_terms, weights, mask, slots, guidance)
        if cache is not None:
            cache.advance(steps, host_steps)
        if start_key is not None:
            if len(self._starts) >= 32:  # bounded, like the contexts
                self._starts.clear()
            kept = (cache.keys[:, :, :, :length].clone(), cache.values[:, :, :, :length].clone(), outputs.clone())
            self._starts[start_key] = (layout, self._weights_stamp(cache), kept)
        return outputs

    def _start_key(
        self,
        inputs: Tensor,
        labels: Tensor | None,
        layout: Layout,
        index: Tensor,
        cache: KVCache | None,
        guidance: float | Tensor | None,
    ) -> tuple | None:
        """The key under which a first call of a generation (only step-0 positions, empty cache) is kept, or None
        when it is not kept.

        A step-0 call depends on nothing sampled: its inputs are start tokens and its outputs and keys and values
        are a function of the labels, the guidance scale and the weights only. So during sampling it is computed
        once per labels and kept on the model for the next generation with the same ones (the weights checked as
        for the contexts): the same floats, without the call (at batch 1, ~0.4 ms of the shipped next-scale
        model's 6 calls; VAR recomputes it every time). Features inputs are ignored at step 0 (the start vector
        replaces them); ids inputs are part of the key.
        """
        if cache is None or cache.length or self.training or torch.is_grad_enabled():
            return None
        batch, length = inputs.shape[:2]
        if batch * length * self.config.vocab_size * self.config.num_heads_out > 1 << 18:
            return None  # large batches (over 1 MiB of kept outputs): the call is a small share of the generation
        device = inputs.device
        autocast_dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        return (
            batch, str(device), id(layout), autocast_dtype, self._compiled is not None,
            None if labels is None else tuple(labels.tolist()),
            tuple(index.tolist()),
            None if self.config.feature_dim else tuple(inputs.flatten().tolist()),
            tuple(guidance.tolist()) if isinstance(guidance, Tensor) else guidance,
        )  # fmt: skip

    def _body(
        self,
        x: Tensor,
        block_terms: list,
        head_terms: list,
        weights: tuple[list[BlockWeights], list[tuple[Tensor | None, Tensor]]],
        mask: Tensor | None,
        cache: KVCache | tuple | None,
        guidance: float | Tensor | None = None,
    ) -> Tensor:
        """The blocks and the output heads, (B, L, D) → (B, L, V) or (B, L, H, V) (B/2 rows with ``guidance``): what
        `compile` compiles."""
        config = self.config
        block_weights, head_weights = weights
        for layer in range(config.depth):
            x = block_step(x, block_weights[layer], block_terms[layer], mask, cache, layer)
        outputs = []
        for head, (norm_weight, output_weight) in enumerate(head_weights):
            if head > 0:
                layer = config.depth + head - 1
                x = block_step(x, block_weights[layer], block_terms[layer], mask, cache, layer)
            features = F.rms_norm(x, (x.shape[-1],), norm_weight, eps=config.norm_eps)
            if head_terms[head] is not None:
                scale, shift = head_terms[head]
                features = torch.addcmul(shift, features, scale)
            if guidance is not None:
                cond, uncond = features.chunk(2)
                features = guide(cond, uncond, guidance)
            outputs.append(linear(features, output_weight))
        return outputs[0] if len(outputs) == 1 else torch.stack(outputs, dim=2)  # (B, L, V) or (B, L, H, V)

    def _static_slots(
        self, cache: KVCache, layout: Layout, index: Tensor, host_steps: Tensor, device: torch.device
    ) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor]:
        """The fixed-shape view of ``cache`` for compiled decoding: (keys, values, where) and the (L, capacity) mask
        over every slot (slot p holds position p; slots at or past the end of this call are masked)."""
        capacity, end = cache.capacity, cache.length + index.numel()
        if end > capacity:
            raise ArgenError(f"KV cache holds {capacity} positions, {end} were fed: make a larger one")
        slot_steps = torch.full((capacity,), layout.num_steps, dtype=torch.long)
        known = min(capacity, layout.length)
        slot_steps[:known] = layout.step_of[:known]
        mask = (slot_steps[None, :] <= host_steps[:, None]) & (torch.arange(capacity)[None, :] < end)
        return (cache.keys, cache.values, index.to(device)), mask.to(device)

    def compile(self, enabled: bool = True, **options) -> Transformer:  # noqa: A003 (nn.Module.compile's name)
        """Compile the blocks and heads with ``torch.compile(**options)`` (inductor by default) for training and
        sampling; ``enabled=False`` goes back to eager. Returns the model.

        Only the fixed-shape body is compiled: the inputs, the class context and the cache bookkeeping stay in
        Python. With a KV cache the compiled body attends over the whole preallocated cache under a mask (instead
        of the cached prefix), so each call length compiles once (one shape for raster, one per scale for
        next-scale) with fixed shapes, what CUDA graphs (``mode="reduce-overhead"``) need (not tried: no GPU was
        available when this was written). Outputs equal eager ones within float rounding, not bit for bit.
        """
        if not enabled:
            self._compiled = None
            return self
        import torch._dynamo

        # Decoding compiles one graph per call length (e.g. 6 scales, or an SJD window and its tail).
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        # Static shapes: sampling meets few distinct (rows, length) pairs, and a graph per pair runs faster than one
        # dynamic-shape graph for all of them.
        self._compiled = torch.compile(self._body, **{"dynamic": False, **options})
        return self

    def _context(
        self, labels: Tensor | None, batch: int, device: torch.device, layout: Layout, cache: KVCache | None
    ) -> tuple[Tensor, list, list, Callable[[Tensor], Tensor], tuple]:
        """What a call needs besides its inputs: the class embedding (B, D), the AdaLN terms of every block and head
        norm, a function of the fed positions' indices (L,) → their position embeddings (L, D), and the weights as
        `_body` reads them.

        All of it depends on the labels and the weights only, so during sampling (a cache, no gradients, eval mode)
        it is computed at the first call and kept in the cache for the rest of the generation: per step that saves
        the class lookup, depth + heads modulation matmuls and the position-table arithmetic (VAR likewise computes
        its ``cond_BD`` once per generation).
        """
        memoize = cache is not None and not self.training and not torch.is_grad_enabled()
        if not memoize:
            return self._compute_context(labels, batch, device, layout, table=False)
        memo = cache.memo.get("context")
        # The samplers pass one labels tensor for the whole generation; equal values are checked otherwise.
        if memo is not None and memo[0] is layout and (memo[1] is labels or _same_labels(memo[2], labels)):
            return memo[3]
        # A later generation with the same labels and layout reuses the context while the weights it depends on are
        # unchanged (same storage, no in-place update since): ~0.15 ms per generation at the shipped sizes.
        autocast_dtype = (
            torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        )  # a context computed under bf16 autocast is not the fp32 one
        key = (batch, str(device), None if labels is None else tuple(labels.tolist()), id(layout), autocast_dtype)
        stamp = self._weights_stamp(cache)
        kept = self._contexts.get(key)
        if kept is not None and kept[0] is layout and kept[1] == stamp:
            context = kept[2]
        else:
            context = self._compute_context(labels, batch, device, layout, table=True)
            if len(self._contexts) >= 64:  # bounded: e.g. an evaluation's batches of mixed labels
                self._contexts.clear()
            self._contexts[key] = (layout, stamp, context)
        cache.memo["context"] = (layout, labels, None if labels is None else labels.clone(), context)
        return context

    def _compute_context(
        self, labels: Tensor | None, batch: int, device: torch.device, layout: Layout, *, table: bool
    ) -> tuple[Tensor, list, list, Callable[[Tensor], Tensor], tuple]:
        """`_context` computed afresh; ``table``: embed every layout position at once and look the fed ones up (for a
        context kept across calls), instead of embedding the fed positions at each call."""
        condition = self.class_embed(self._labels(labels, batch, device))  # (B, D)
        silu = F.silu(condition) if self.config.adaln else None
        blocks = [*self.blocks, *self.head_blocks]
        block_terms = [block.modulate(silu) for block in blocks]
        head_terms = [norm.modulate(silu) for norm in self.head_norms]
        if table:
            embedded = self._position_embedding(layout.positions.to(device), layout.sizes.to(device))  # (L_all, D)

            def positions(index: Tensor) -> Tensor:
                return embedded[index.to(device)]
        else:

            def positions(index: Tensor) -> Tensor:
                return self._position_embedding(layout.positions[index].to(device), layout.sizes[index].to(device))

        # The weights as the computation reads them (`block_step`, the heads): gathered here, so that a generation
        # walks the module tree once rather than at every call.
        weights = (
            [block.weights() for block in blocks],
            [(norm.norm.weight, head.weight) for norm, head in zip(self.head_norms, self.output_heads, strict=True)],
        )
        return condition, block_terms, head_terms, positions, weights

    def _weights_stamp(self, cache: KVCache | None = None) -> tuple:
        """Where every weight lives and how often it was changed in place: equal stamps, equal weights (an optimizer
        step or ``load_state_dict`` bumps a version; ``.to()`` moves the storage). Computed once per generation
        (kept in the cache's memo) when a cache is given."""
        if cache is not None and "stamp" in cache.memo:
            return cache.memo["stamp"]
        stamp = tuple((parameter.data_ptr(), parameter._version, parameter.dtype) for parameter in self.parameters())
        if cache is not None:
            cache.memo["stamp"] = stamp
        return stamp

    def _check(self, inputs: Tensor, layout: Layout) -> None:
        config = self.config
        if config.feature_dim and (inputs.dim() != 3 or inputs.shape[-1] != config.feature_dim):
            raise ArgenError(
                f"this transformer takes (B, L, {config.feature_dim}) features, got {tuple(inputs.shape)}: "
                "build it with the order's model_settings"
            )
        if not config.feature_dim and (inputs.dim() != 2 or inputs.dtype != torch.long):
            raise ArgenError(
                f"this transformer takes (B, L) token ids, got {tuple(inputs.shape)} {inputs.dtype}: "
                "build it with the order's model_settings"
            )
        if layout.num_steps > config.max_steps or layout.max_grid > config.max_grid:
            raise ArgenError(
                f"the layout has {layout.num_steps} steps and grids up to {layout.max_grid}, the transformer "
                f"max_steps={config.max_steps} and max_grid={config.max_grid}: build it with the order's model_settings"
            )

    def _labels(self, labels: Tensor | None, batch: int, device: torch.device) -> Tensor:
        null = self.config.num_classes
        if labels is None:
            return torch.full((batch,), null, dtype=torch.long, device=device)
        if null == 0:
            raise ArgenError("this transformer is unconditional (num_classes=0): pass labels=None")
        if labels.shape != (batch,):
            raise ArgenError(f"labels must be ({batch},), got {tuple(labels.shape)}")
        labels = labels.to(device=device, dtype=torch.long)
        if bool(((labels < 0) | (labels > null)).any()):
            raise ArgenError(f"labels must lie in [0, {null}] ({null} is the null class)")
        if self.training and self.config.class_dropout > 0:
            # Classifier-free guidance training: the model also learns the unconditional distribution.
            dropped = torch.rand(batch, device=device) < self.config.class_dropout
            labels = torch.where(dropped, torch.full_like(labels, null), labels)
        return labels

    def _position_embedding(self, positions: Tensor, sizes: Tensor) -> Tensor:
        """(L, 3) (step, row, col) and (L, 2) grid sizes → (L, D); rows and columns scaled by cell centre."""
        table = self.config.max_grid
        rows = (2 * positions[:, 1] + 1) * table // (2 * sizes[:, 0])
        cols = (2 * positions[:, 2] + 1) * table // (2 * sizes[:, 1])
        return self.step_embed(positions[:, 0]) + self.row_embed(rows) + self.col_embed(cols)


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, device: torch.device | str) -> None:
    """ArgenError unless ``precision`` can run on ``device``."""
    if precision not in PRECISIONS:
        raise ArgenError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if (
        precision == "bf16"
        and device.type == "cuda"
        and torch.cuda.is_available()
        and not torch.cuda.is_bf16_supported()
    ):
        raise ArgenError("this GPU has no bfloat16 support: use --precision fp32")


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The mixed-precision context of ``precision``: nothing for fp32; for bf16, `torch.autocast` in bfloat16 (matmuls
    and attention in bf16, norms, softmax and losses in fp32; weights stay fp32). Meant for GPUs: on a CPU without
    native bf16 matmuls it is slower than fp32."""
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def check_compile() -> None:
    """ArgenError, in one line, when torch.compile cannot run here (no C compiler for inductor, or an unsupported
    Python)."""
    import shutil
    import sys

    if sys.platform == "win32":
        raise ArgenError("--compile needs torch.compile's inductor, which this build does not support on Windows")
    if not any(shutil.which(compiler) for compiler in ("cc", "gcc", "clang", "c++", "g++")):
        raise ArgenError("--compile needs a C compiler (gcc or clang) for torch.compile's inductor: install one")
    try:
        import torch._dynamo  # noqa: F401
    except Exception as error:  # an unsupported Python version fails here
        raise ArgenError(f"torch.compile does not work in this environment ({error}): run without --compile") from None


__all__ = [
    "PRECISIONS",
    "PRESETS",
    "KVCache",
    "Transformer",
    "TransformerConfig",
    "autocast",
    "check_compile",
    "check_precision",
    "preset_config",
]
