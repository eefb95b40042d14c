"""Generation orders: id grids → training sequence and inference schedule, one file per paper, discovered.

- ``raster``: one token per step, row-major (LlamaGen); single-grid tokenizers (vq, fsq).
- ``scale``: one scale per step, coarse to fine (VAR); the multiscale tokenizer.
- ``frequency``: one frequency band per step, low to high (NFIG); the frequency tokenizer.
- ``neighbor``: one anti-diagonal per step with two dimension-oriented heads (NAR); single-grid tokenizers.

A new order is one new file in this folder: a subclass of `base.Order` decorated with ``@register_order``, carrying
its metadata (paper, default tokenizer, capabilities). `ORDERS` imports every module here on first use, so the CLI,
`argen bench`, `argen demo` and the contract tests pick it up with no other edit.

A trainer and a sampler use an order the same way (see `base.Order`)::

    order = build_order("scale", tokenizer)
    model = Transformer(preset_config("3m", num_classes=10, **order.model_settings(tokenizer)))
    layout = order.layout(tokenizer.grid_shapes)
    inputs, targets = order.train_inputs(ids, tokenizer)
    logits = order.logits(model(inputs, labels, layout=layout), layout)  # (B, L, V)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from argen.orders.base import ORDERS, Layout, Order, block_causal_mask, register_order

if TYPE_CHECKING:
    from argen.tokenizers.protocol import TokenizerProtocol


def build_order(name: str, tokenizer: TokenizerProtocol) -> Order:
    """The order ``name`` for ``tokenizer``; ArgenError if the name is unknown or the tokenizer does not fit it."""
    order = ORDERS.lookup(name)()
    order.check_tokenizer(tokenizer)
    return order


def default_tokenizers() -> dict[str, str]:
    """Order name → the tokenizer kind `argen bench` trains for it, e.g. {"raster": "vq", "scale": "multiscale"}."""
    return {name: order.default_tokenizer for name, order in ORDERS.items()}


__all__ = ["ORDERS", "Layout", "Order", "block_causal_mask", "build_order", "default_tokenizers", "register_order"]
