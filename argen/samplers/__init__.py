"""Samplers: logits → ids. Each receives the model, the order and the tokenizer as arguments and never stores them.

- ``ar``: plain autoregressive sampling, one model call per step of the order's schedule, with a KV cache.
- ``jacobi``: speculative Jacobi decoding (SJD, arXiv 2410.01699) for the raster and neighbor orders: drafts of the
  next steps verified in one call, the same distribution in fewer calls.

Shared pieces: `logits` (guidance, temperature, top-k, top-p, seeded sampling); the KV cache is
`argen.transformer.KVCache`, made by ``model.new_cache`` and owned by the sampler for one generation.
"""

from __future__ import annotations

from collections.abc import Callable

from argen.samplers.ar import GenerationOutput, generate
from argen.samplers.jacobi import generate_jacobi

SAMPLERS: dict[str, Callable[..., GenerationOutput]] = {
    "ar": generate,
    "jacobi": generate_jacobi,
}

__all__ = ["SAMPLERS", "GenerationOutput", "generate", "generate_jacobi"]
