"""The one decoder-only transformer every order trains and samples (legend: B batch, L sequence, V vocabulary,
D width, F feature width, H output heads).

Pre-norm blocks (`argen.model.layers`) as in LlamaGen (arXiv 2406.06525), class-modulated through AdaLN as in VAR
(arXiv 2404.02905). What the transformer needs from an order is a `Layout`:

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

The model keeps nothing between calls: a call's state is its arguments (the caller's `KVCache`, which also carries
what one generation computes once, the class `Context`). What is reused across generations (contexts, first calls,
compiled graphs) and classifier-free guidance between `forward_features` and `forward_head` are the business of
`argen.samplers.engine.SamplingEngine`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from argen.errors import ArgenError
from argen.model.config import TransformerConfig
from argen.model.kv_cache import KVCache
from argen.model.layers import Block, BlockTerms, BlockWeights, HeadNorm, Slots, block_step, head_features
from argen.onednn import Linear, linear
from argen.orders.base import block_causal_mask

if TYPE_CHECKING:
    from argen.orders.base import Layout

HeadWeights = tuple[Tensor | None, Tensor]  # (head norm weight or None under AdaLN, output layer weight (V, D))


class Context(NamedTuple):
    """What a call needs besides its inputs, a function of the labels, the layout and the weights only."""

    condition: Tensor  # (B, D) the class embedding
    block_terms: list[BlockTerms | None]  # AdaLN terms of every block (main ones, then the extra heads')
    head_terms: list[tuple[Tensor, Tensor] | None]  # AdaLN terms of every head norm
    positions: Callable[[Tensor], Tensor]  # (L,) indices of fed layout positions → (L, D) position embeddings
    block_weights: list[BlockWeights]  # the weights as `block_step` reads them
    head_weights: list[HeadWeights]


class Call(NamedTuple):
    """One call's inputs, prepared (`Transformer.prepare`)."""

    x: Tensor  # (B, L, D) embedded inputs
    context: Context
    index: Tensor  # (L,) the fed layout positions, on the host
    steps: Tensor  # (L,) their steps, on the inputs' device
    host_steps: Tensor  # (L,) the same on the host


class Transformer(nn.Module):
    """Decoder-only transformer over an order's sequence: inputs + labels + layout (+ a cache) → logits."""

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
        self._compiled: Callable[..., Tensor] | None = None  # set by `compile`, fixed until the next `compile`

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
    ) -> Tensor:
        """Logits of the fed sequence positions.

        Args:
            inputs: (B, L) ids in [0, V] (V = start) or (B, L, F) features.
            labels: (B,) classes in [0, num_classes] (num_classes = null), or None for the null class.
            layout: the order's layout for the tokenizer's grids.
            index: (L,) which layout positions ``inputs`` are (default: the first L); with a cache, those after
                the cached ones, e.g. ``layout.inputs_of_step[s]``.
            cache: a `KVCache` to read earlier positions from and append these to.

        Returns:
            (B, L, V) logits, or (B, L, H, V) with H = num_heads_out > 1.
        """
        call = self.prepare(inputs, labels, layout=layout, index=index, cache=cache)
        context = call.context
        mask = self.attention_mask(call.steps, call.host_steps, cache)
        hooked = self.blocks_hooked(cache)
        if self._compiled is not None and cache is None and not hooked:
            outputs = self._compiled(call.x, context.block_terms, context.head_terms, context.block_weights,
                                     context.head_weights, mask)  # fmt: skip
        else:
            features = self.forward_features(call.x, context.block_terms, context.head_terms, context.block_weights,
                                             context.head_weights, mask=mask, cache=cache, hooked=hooked)  # fmt: skip
            outputs = self.forward_head(features, context.head_weights)
        if cache is not None:
            cache.advance(call.steps, call.host_steps)
        return outputs

    def prepare(
        self,
        inputs: Tensor,
        labels: Tensor | None,
        *,
        layout: Layout,
        index: Tensor | None,
        cache: KVCache | None,
        context: Callable[[], Context] | None = None,
    ) -> Call:
        """Check the inputs, find their steps and embed them (inputs, start tokens, classes, positions).

        With a cache, in eval mode without gradients (sampling), the class `Context` is computed at the first call
        and kept in the cache for the rest of the generation: per step that saves the class lookup, depth + heads
        modulation matmuls and the position-table arithmetic (VAR likewise computes its ``cond_BD`` once per
        generation). ``context``, when given, makes that first context (the engine's reuse across generations).
        """
        self.check_inputs(inputs, layout)
        batch, length = inputs.shape[:2]
        device = inputs.device
        index = torch.arange(length) if index is None else index.cpu()
        host_steps = layout.step_of[index]  # (L,) on the host: masks and start slots are decided without a sync
        steps = host_steps.to(device)
        if cache is None or self.training or torch.is_grad_enabled():
            kept = self.context(labels, batch, device, layout)
        else:
            kept = cache.memo.get("context")
            # The samplers pass one labels tensor for the whole generation; equal values are checked otherwise.
            if kept is None or kept[0] is not layout or not (kept[1] is labels or _same_labels(kept[2], labels)):
                made = context() if context is not None else self.context(labels, batch, device, layout, table=True)
                kept = (layout, labels, None if labels is None else labels.clone(), made)
                cache.memo["context"] = kept
            kept = kept[3]
        x = self.feature_proj(inputs) if self.config.feature_dim else self.token_embed(inputs)  # (B, L, D)
        if int(host_steps[0]) == 0:  # steps never decrease, so only a call that starts at step 0 has start slots
            is_start = (steps == 0)[None, :, None]  # (1, L, 1)
            if self.config.feature_dim:
                x = torch.where(is_start, self.start, x)
            x = x + is_start * kept.condition[:, None, :]
        x = x + kept.positions(index)
        return Call(x, kept, index, steps, host_steps)

    def attention_mask(self, steps: Tensor, host_steps: Tensor, cache: KVCache | None) -> Tensor | None:
        """The (L, K) block-causal mask of a call over the cached and fed keys, or None when every query may see every
        key (one step after the cached ones: SDPA's unmasked kernel)."""
        if cache is None:
            return block_causal_mask(steps)
        first_step, last_step = int(host_steps[0]), int(host_steps[-1])
        if first_step == last_step and cache.last_step <= first_step:
            return None
        return block_causal_mask(steps, torch.cat([cache.steps[: cache.length], steps]))

    def forward_features(
        self,
        x: Tensor,
        block_terms: list[BlockTerms | None],
        head_terms: list[tuple[Tensor, Tensor] | None],
        block_weights: list[BlockWeights],
        head_weights: list[HeadWeights],
        *,
        mask: Tensor | None,
        cache: Slots,
        hooked: bool = False,
    ) -> list[Tensor]:
        """The blocks and the head norms, x (B, L, D) → one (B, L, D) features tensor per output head: what the
        output layers read (and where classifier-free guidance may act, since they are linear without a bias).
        ``hooked`` (`blocks_hooked`): run the blocks as modules, so that forward hooks fire (the same floats)."""
        config = self.config
        blocks = [*self.blocks, *self.head_blocks]

        def run(layer: int, x: Tensor) -> Tensor:
            if hooked:
                return blocks[layer](x, block_terms[layer], mask=mask, cache=cache, layer=layer)
            return block_step(x, block_weights[layer], block_terms[layer], mask, cache, layer)

        for layer in range(config.depth):
            x = run(layer, x)
        features = []
        for head, (norm_weight, _) in enumerate(head_weights):
            if head > 0:
                x = run(config.depth + head - 1, x)
            features.append(head_features(x, norm_weight, head_terms[head], eps=config.norm_eps))
        return features

    def blocks_hooked(self, cache: KVCache | None = None) -> bool:
        """Whether a forward hook or pre-hook sits on a block or one of its sub-modules (hook points for
        `argen.interpret`: ``attention.z``, ``mlp_out``, ...). Calls then run the blocks as modules, so that the hooks
        fire, instead of the fused `block_step` (which calls no module). Looked at once per generation with a
        ``cache`` (kept in its memo), at every call without one."""
        if cache is not None and "hooked" in cache.memo:
            return bool(cache.memo["hooked"])
        hooked = any(
            module._forward_hooks or module._forward_pre_hooks
            for block in (*self.blocks, *self.head_blocks)
            for module in block.modules()
        )
        if cache is not None:
            cache.memo["hooked"] = hooked
        return hooked

    def forward_head(self, features: list[Tensor], head_weights: list[HeadWeights]) -> Tensor:
        """The output layers: one (B, L, D) features tensor per head → (B, L, V), or (B, L, H, V) with H > 1 heads."""
        outputs = [linear(part, weight) for part, (_, weight) in zip(features, head_weights, strict=True)]
        return outputs[0] if len(outputs) == 1 else torch.stack(outputs, dim=2)

    def _body(
        self,
        x: Tensor,
        block_terms: list[BlockTerms | None],
        head_terms: list[tuple[Tensor, Tensor] | None],
        block_weights: list[BlockWeights],
        head_weights: list[HeadWeights],
        mask: Tensor | None,
    ) -> Tensor:
        """`forward_features` then `forward_head` without a cache: what `compile` compiles for training."""
        features = self.forward_features(x, block_terms, head_terms, block_weights, head_weights, mask=mask, cache=None)
        return self.forward_head(features, head_weights)

    def compile(self, enabled: bool = True, **options) -> Transformer:  # noqa: A003 (nn.Module.compile's name)
        """Compile the blocks and heads of cacheless calls (training) with ``torch.compile(**options)``;
        ``enabled=False`` goes back to eager. Returns the model. Sampling compiles through
        `argen.samplers.engine.SamplingEngine.compile`. Outputs equal eager ones within float rounding."""
        if not enabled:
            self._compiled = None
            return self
        self._compiled = torch.compile(self._body, **{"dynamic": False, **options})
        return self

    def context(
        self, labels: Tensor | None, batch: int, device: torch.device, layout: Layout, *, table: bool = False
    ) -> Context:
        """The `Context` of a call, computed afresh; ``table``: embed every layout position at once and look the fed
        ones up (for a context kept across calls), instead of embedding the fed positions at each call."""
        condition = self.class_embed(self._labels(labels, batch, device))  # (B, D)
        silu = F.silu(condition) if self.config.adaln else None
        blocks = [*self.blocks, *self.head_blocks]
        if table:
            embedded = self._position_embedding(layout.positions.to(device), layout.sizes.to(device))  # (L_all, D)

            def positions(index: Tensor) -> Tensor:
                return embedded[index.to(device)]
        else:

            def positions(index: Tensor) -> Tensor:
                return self._position_embedding(layout.positions[index].to(device), layout.sizes[index].to(device))

        # The weights as the computation reads them (`block_step`, the heads): gathered here, so that a generation
        # walks the module tree once rather than at every call.
        return Context(
            condition=condition,
            block_terms=[block.modulate(silu) for block in blocks],
            head_terms=[norm.modulate(silu) for norm in self.head_norms],
            positions=positions,
            block_weights=[block.weights() for block in blocks],
            head_weights=[(norm.norm.weight, head.weight) for norm, head in zip(self.head_norms, self.output_heads)],
        )

    def check_inputs(self, inputs: Tensor, layout: Layout) -> None:
        """ArgenError unless ``inputs`` and ``layout`` fit this transformer's config."""
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


def _same_labels(first: Tensor | None, second: Tensor | None) -> bool:
    if first is None or second is None:
        return first is None and second is None
    return first.shape == second.shape and bool(torch.equal(first, second.to(first.device)))


__all__ = ["Call", "Context", "Transformer"]
