"""The model: the one decoder-only transformer (`Transformer`), its config and presets, the KV cache and the
precision and compile checks. The model keeps nothing between calls; sampling's reuse lives in
`argen.samplers.engine`."""

from __future__ import annotations

from argen.model.config import PRESETS, TransformerConfig, preset_config
from argen.model.kv_cache import KVCache
from argen.model.precision import PRECISIONS, autocast, check_compile, check_precision
from argen.model.transformer import Context, Transformer

__all__ = [
    "PRECISIONS",
    "PRESETS",
    "Context",
    "KVCache",
    "Transformer",
    "TransformerConfig",
    "autocast",
    "check_compile",
    "check_precision",
    "preset_config",
]
