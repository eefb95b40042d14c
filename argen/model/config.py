"""The transformer's configuration and its architecture presets (legend: V vocabulary, D width)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from argen.errors import ArgenError


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


def preset_config(name: str, **fields: int | float | bool) -> TransformerConfig:
    """The config of preset ``name`` with ``fields`` set (typically num_classes and order.model_settings(...))."""
    if name not in PRESETS:
        raise ArgenError(f"unknown transformer preset {name!r}: choose one of {', '.join(PRESETS)}")
    return TransformerConfig(**{**PRESETS[name], **fields})


__all__ = ["PRESETS", "TransformerConfig", "preset_config"]
