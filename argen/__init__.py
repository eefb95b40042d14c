"""argen: autoregressive image generation over learned autoencoder tokenizers.

The data flow, one module per arrow:

1. ``argen.data``: image sources (fashion-mnist, mnist, folder:PATH) as uint8 tensors.
2. ``argen.tokenizers``: images ⇄ token ids, one ``(B, h, w)`` grid per scale or band.
3. ``argen.orders``: id grids → training sequence and inference schedule.
4. ``argen.model``: the one decoder-only transformer, sequence → logits; it keeps nothing between calls.
5. ``argen.samplers``: logits → ids, step by step with a KV cache; its engine keeps what generations share.
6. ``argen.pipeline``: the whole chain; ``Pipeline.from_pretrained(dir)``.
7. ``argen.metrics``: numbers.

The registries, each filled by the components' own files: ``argen.ORDERS``, ``argen.TOKENIZERS``,
``argen.SAMPLERS`` (and the transformer's ``argen.PRESETS``); see docs/architecture.md.
``argen.compress`` / ``argen.decompress`` (`argen.codec`) use a model as an entropy model for images.
"""

__version__ = "0.1.0"

__all__ = ["ORDERS", "PRESETS", "SAMPLERS", "TOKENIZERS", "Pipeline", "__version__", "compress", "decompress"]

# name → the module that defines it; imported on first use, so `argen --help` does not pay for loading every module.
_LAZY = {
    "Pipeline": "argen.pipeline",
    "ORDERS": "argen.orders",
    "TOKENIZERS": "argen.tokenizers",
    "SAMPLERS": "argen.samplers",
    "PRESETS": "argen.model",
    "compress": "argen.codec",
    "decompress": "argen.codec",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'argen' has no attribute {name!r}")
