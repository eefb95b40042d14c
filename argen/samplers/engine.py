"""The sampling engine: what sampling reuses across model calls and generations, kept out of the model.

The `Transformer` computes logits from its arguments and keeps nothing between calls. Sampling calls it many times
with a lot in common, and this engine holds what those calls share (nanochat's ``Engine`` splits its model the same
way; legend: B batch, L sequence, V vocabulary, D width):

- classifier-free guidance between the model's features and its output layers (`SamplingEngine.__call__`): the 2B
  rows are B conditional ones then their B null-class ones, and the output layers are linear without a bias, so
  guiding the head-normed features gives the guided logits at half the output layers' cost (B rows instead of 2B
  through the V-wide matmul); equal to guiding the logits up to float rounding.
- the class context of a generation (class embedding, AdaLN terms, position table, gathered weights) kept across
  generations with the same labels and layout (~0.15 ms per generation at the shipped sizes).
- the first call of a generation, kept across generations with the same request: a step-0 call depends on nothing
  sampled (its inputs are start tokens), so its outputs and keys and values are a function of the labels, the
  guidance scale and the weights only (at batch 1, ~0.4 ms of the shipped next-scale model's 6 calls; VAR
  recomputes it every time).
- the compiled decoding body (`compile`) and the fixed-shape view of the cache it needs.

What is kept depends on the weights, and the engine is told when they change: its owner (`argen.Pipeline`) calls
`invalidate` whenever it loads or moves weights. An engine made for a bare model (`SamplingEngine.of`) lives for one
generation, so nothing it keeps can go stale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from argen.errors import ArgenError
from argen.model import KVCache, Transformer
from argen.model.layers import BlockTerms, BlockWeights, Slots, StaticSlots
from argen.model.transformer import Context, HeadWeights
from argen.samplers.logits import guide

if TYPE_CHECKING:
    from argen.orders.base import Layout

# Kept entries are bounded: e.g. an evaluation's batches of mixed labels would otherwise grow them without end.
MAX_CONTEXTS = 64
MAX_STARTS = 32
# Step-0 calls are kept only up to this many output floats (1 MiB): in large batches the call is a small share.
MAX_START_OUTPUTS = 1 << 18


class SamplingEngine:
    """Runs one `Transformer` for the samplers: guidance, contexts and first calls reused, optionally compiled.

    Call it like the model, with the guidance scale added; make caches with `new_cache`.
    """

    def __init__(self, model: Transformer) -> None:
        self.model = model
        self._contexts: dict[tuple, tuple[Layout, Context]] = {}
        self._starts: dict[tuple, tuple[Layout, tuple[Tensor, Tensor, Tensor]]] = {}
        self._compiled: Callable[..., Tensor] | None = None

    @classmethod
    def of(cls, model: Transformer | SamplingEngine) -> SamplingEngine:
        """``model``'s engine: itself when it is one, else a new engine (which then serves one generation)."""
        return model if isinstance(model, SamplingEngine) else cls(model)

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def invalidate(self) -> None:
        """Forget every kept context and first call: the model's weights changed (loaded, moved, cast, trained)."""
        self._contexts.clear()
        self._starts.clear()

    def compile(self, enabled: bool = True, **options) -> SamplingEngine:
        """Compile the blocks, guidance and heads of sampling calls with ``torch.compile(**options)`` (inductor by
        default); ``enabled=False`` goes back to eager. Returns the engine.

        Only the fixed-shape body is compiled: the inputs, the class context and the cache bookkeeping stay in
        Python. With a KV cache the compiled body attends over the whole preallocated cache under a mask (instead
        of the cached prefix), so each call length compiles once (one shape for raster, one per scale for
        next-scale) with fixed shapes, what CUDA graphs (``mode="reduce-overhead"``) need. Outputs equal eager ones
        within float rounding, not bit for bit.
        """
        self.invalidate()  # kept first calls were computed by the other body
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

    def new_cache(self, batch: int, *, capacity: int) -> KVCache:
        """An empty KV cache of the model for ``batch`` rows of up to ``capacity`` positions (one generation)."""
        return self.model.new_cache(batch, capacity=capacity)

    def __call__(
        self,
        inputs: Tensor,
        labels: Tensor | None,
        *,
        layout: Layout,
        index: Tensor | None = None,
        cache: KVCache | None = None,
        guidance: float | Tensor | None = None,
    ) -> Tensor:
        """Outputs of the fed positions, as `Transformer.forward` (same arguments), guided with ``guidance``.

        Args:
            guidance: classifier-free guidance scale s, a float or (L,) per fed position: the 2B rows of ``inputs``
                and ``labels`` are B conditional ones then their B null-class ones, and the result is the guided
                outputs uncond + s · (cond - uncond) of the B images. None: unguided.

        Returns:
            (B, L, V) or (B, L, H, V) (B: the guided images with ``guidance``).
        """
        model = self.model
        batch = inputs.shape[0]
        if guidance is not None and batch % 2:
            raise ArgenError(f"guidance needs 2B rows (conditional, then null class), got {batch}")
        index = torch.arange(inputs.shape[1]) if index is None else index.cpu()
        # A forward hook on a block (argen.interpret: recording, steering) must see every call and change what it
        # computes, so while one is registered nothing kept is served or kept (no first call, no context across
        # generations) and the blocks run eagerly as modules; what was kept without hooks stays valid after them.
        hooked = model.blocks_hooked(cache)
        start_key = None if hooked else self._start_key(inputs, labels, layout, index, cache, guidance)
        kept = self._starts.get(start_key) if start_key is not None else None
        if kept is not None and kept[0] is layout:
            model.check_inputs(inputs, layout)
            return self._replay_start(kept[1], layout, index, cache)
        call = model.prepare(
            inputs, labels, layout=layout, index=index, cache=cache,
            context=None if hooked else lambda: self._kept_context(labels, batch, inputs.device, layout),
        )  # fmt: skip
        context, device = call.context, inputs.device
        compiled = self._compiled if not hooked else None
        slots: Slots = cache
        if cache is not None and compiled is not None and int(call.index[0]) == cache.length:
            slots, mask = static_slots(cache, layout, call.index, call.host_steps, device)
        else:
            mask = model.attention_mask(call.steps, call.host_steps, cache)
        if isinstance(guidance, Tensor):
            # (1, L, 1) per position, never below float32 (a bf16 scale would be off in its third digit)
            dtype = torch.promote_types(call.x.dtype, torch.float32)
            guidance = guidance.to(device=device, dtype=dtype).view(1, -1, 1)
        elif guidance is not None and compiled is not None:
            guidance = torch.tensor(guidance, device=device)  # a tensor, not a constant: no graph per scale
        if compiled is not None:
            outputs = compiled(call.x, context.block_terms, context.head_terms, context.block_weights,
                               context.head_weights, mask, slots, guidance)  # fmt: skip
        else:
            outputs = self._body(call.x, context.block_terms, context.head_terms, context.block_weights,
                                 context.head_weights, mask, slots, guidance, hooked)  # fmt: skip
        if cache is not None:
            cache.advance(call.steps, call.host_steps)
        if start_key is not None:
            self._keep_start(start_key, layout, cache, outputs)
        return outputs

    def _body(
        self,
        x: Tensor,
        block_terms: list[BlockTerms | None],
        head_terms: list[tuple[Tensor, Tensor] | None],
        block_weights: list[BlockWeights],
        head_weights: list[HeadWeights],
        mask: Tensor | None,
        slots: Slots,
        guidance: float | Tensor | None,
        hooked: bool = False,
    ) -> Tensor:
        """Features, guidance, heads: (B, L, D) → (B, L, V) or (B, L, H, V) (B/2 rows with ``guidance``), what
        `compile` compiles; ``hooked``: the blocks run as modules (`Transformer.blocks_hooked`)."""
        model = self.model
        features = model.forward_features(x, block_terms, head_terms, block_weights, head_weights, mask=mask,
                                          cache=slots, hooked=hooked)  # fmt: skip
        if guidance is not None:
            features = [guide(*part.chunk(2), guidance) for part in features]  # conditional rows, then null ones
        return model.forward_head(features, head_weights)

    def _kept_context(self, labels: Tensor | None, batch: int, device: torch.device, layout: Layout) -> Context:
        """The class context of a generation: kept from an earlier one with the same labels and layout, else made."""
        autocast_dtype = (
            torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        )  # a context computed under bf16 autocast is not the fp32 one
        key = (batch, str(device), None if labels is None else tuple(labels.tolist()), id(layout), autocast_dtype)
        kept = self._contexts.get(key)
        if kept is not None and kept[0] is layout:
            return kept[1]
        context = self.model.context(labels, batch, device, layout, table=True)
        if len(self._contexts) >= MAX_CONTEXTS:
            self._contexts.clear()
        self._contexts[key] = (layout, context)
        return context

    def _start_key(
        self,
        inputs: Tensor,
        labels: Tensor | None,
        layout: Layout,
        index: Tensor,
        cache: KVCache | None,
        guidance: float | Tensor | None,
    ) -> tuple | None:
        """The key under which a first call of a generation (only step-0 positions, empty cache, sampling) is kept,
        or None when it is not kept. Features inputs are ignored at step 0 (the start vector replaces them); ids
        inputs are part of the key."""
        model = self.model
        if cache is None or cache.length or model.training or torch.is_grad_enabled():
            return None
        if int(layout.step_of[index[-1]]) != 0:
            return None
        batch, length = inputs.shape[:2]
        if batch * length * model.config.vocab_size * model.config.num_heads_out > MAX_START_OUTPUTS:
            return None
        device = inputs.device
        autocast_dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        return (
            batch, str(device), id(layout), autocast_dtype, self._compiled is not None,
            None if labels is None else tuple(labels.tolist()),
            tuple(index.tolist()),
            None if model.config.feature_dim else tuple(inputs.flatten().tolist()),
            tuple(guidance.tolist()) if isinstance(guidance, Tensor) else guidance,
        )  # fmt: skip

    @staticmethod
    def _replay_start(kept: tuple[Tensor, Tensor, Tensor], layout: Layout, index: Tensor, cache: KVCache) -> Tensor:
        """A kept first call written into ``cache`` as the call would have: its outputs (a copy)."""
        keys, values, outputs = kept
        length = keys.shape[3]
        cache.keys[:, :, :, :length] = keys
        cache.values[:, :, :, :length] = values
        host_steps = layout.step_of[index]
        cache.advance(host_steps.to(cache.steps.device), host_steps)
        return outputs.clone()

    def _keep_start(self, key: tuple, layout: Layout, cache: KVCache, outputs: Tensor) -> None:
        if len(self._starts) >= MAX_STARTS:
            self._starts.clear()
        length = cache.length
        kept = (cache.keys[:, :, :, :length].clone(), cache.values[:, :, :, :length].clone(), outputs.clone())
        self._starts[key] = (layout, kept)


def static_slots(
    cache: KVCache, layout: Layout, index: Tensor, host_steps: Tensor, device: torch.device
) -> tuple[StaticSlots, Tensor]:
    """The fixed-shape view of ``cache`` for compiled decoding: (keys, values, where) and the (L, capacity) mask over
    every slot (slot p holds position p; slots at or past the end of this call are masked)."""
    capacity, end = cache.capacity, cache.length + index.numel()
    if end > capacity:
        raise ArgenError(f"KV cache holds {capacity} positions, {end} were fed: make a larger one")
    slot_steps = torch.full((capacity,), layout.num_steps, dtype=torch.long)
    known = min(capacity, layout.length)
    slot_steps[:known] = layout.step_of[:known]
    mask = (slot_steps[None, :] <= host_steps[:, None]) & (torch.arange(capacity)[None, :] < end)
    return (cache.keys, cache.values, index.to(device)), mask.to(device)


__all__ = ["SamplingEngine", "static_slots"]
