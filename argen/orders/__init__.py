"""Generation orders: id grids → training sequence and inference schedule, one file per paper.

- ``raster``: one token per step, row-major (LlamaGen); single-grid tokenizers (vq, fsq).
- ``scale``: one scale per step, coarse to fine (VAR); the multiscale tokenizer.
- ``frequency``: one frequency band per step, low to high (NFIG); the frequency tokenizer.
- ``neighbor``: one anti-diagonal per step with two dimension-oriented heads (NAR); single-grid tokenizers.

A trainer and a sampler use an order the same way (see `base.Order`)::

    order = build_order("scale", tokenizer)
    model = Transformer(preset_config("3m", num_classes=10, **order.model_settings(tokenizer)))
    layout = order.layout(tokenizer.grid_shapes)
    inputs, targets = order.train_inputs(ids, tokenizer)
    logits = order.logits(model(inputs, labels, layout=layout), layout)  # (B, L, V)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
"""

from __future__ import annotations

from typing import Any

from argen.errors import ArgenError
from argen.orders.base import Layout, Order, block_causal_mask
from argen.orders.frequency import FrequencyOrder
from argen.orders.neighbor import NeighborOrder
from argen.orders.raster import RasterOrder
from argen.orders.scale import ScaleOrder

ORDERS: dict[str, type[Order]] = {
    "raster": RasterOrder,
    "scale": ScaleOrder,
    "frequency": FrequencyOrder,
    "neighbor": NeighborOrder,
}


def build_order(name: str, tokenizer: Any) -> Order:
    """The order ``name`` for ``tokenizer``; ArgenError if the name is unknown or the tokenizer does not fit it."""
    if name not in ORDERS:
        raise ArgenError(f"unknown order {name!r}: choose one of {', '.join(ORDERS)}")
    order = ORDERS[name]()
    order.check_tokenizer(tokenizer)
    return order


__all__ = ["ORDERS", "Layout", "Order", "block_causal_mask", "build_order"]
