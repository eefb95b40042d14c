"""Samplers: logits → ids. Each receives the model, the order and the tokenizer as arguments and never stores them.

- ``ar``: plain autoregressive sampling, one model call per step of the order's schedule, with a KV cache.
- ``jacobi``: speculative Jacobi decoding (SJD, arXiv 2410.01699) for the raster and neighbor orders: drafts of the
  next steps verified in one call, the same distribution in fewer calls.
- ``collaborative``: collaborative decoding (CoDe, arXiv 2411.17787) for the scale and frequency orders: a large
  drafter makes the first, coarse steps and a small refiner, trained with the same order on the same tokenizer, the
  fine ones; ``passes_by_model`` counts each model's calls.

Shared pieces: `logits` (guidance, temperature, top-k, top-p, seeded sampling); the KV cache is
`argen.transformer.KVCache`, made by ``model.new_cache`` and owned by the sampler for one generation.
"""

from __future__ import annotations

from collections.abc import Callable

from argen.samplers.ar import GenerationOutput, generate
from argen.samplers.collaborative import generate_collaborative
from argen.samplers.jacobi import generate_jacobi

SAMPLERS: dict[str, Callable[..., GenerationOutput]] = {
    "ar": generate,
    "jacobi": generate_jacobi,
    "collaborative": generate_collaborative,
}

__all__ = ["SAMPLERS", "GenerationOutput", "generate", "generate_collaborative", "generate_jacobi"]
