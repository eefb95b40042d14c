"""Samplers: logits → ids. Each receives the model, the order and the tokenizer as arguments and never stores them.

- ``ar``: plain autoregressive sampling, one model call per step of the order's schedule, with a KV cache.
- ``jacobi``: speculative Jacobi decoding (SJD, arXiv 2410.01699) for single-grid orders (raster, neighbor): drafts
  of the next steps verified in one call, the same distribution in fewer calls.
- ``collaborative``: collaborative decoding (CoDe, arXiv 2411.17787) for coarse-to-fine orders (scale, frequency): a
  large drafter makes the first, coarse steps and a small refiner, trained with the same order on the same
  tokenizer, the fine ones; ``passes_by_model`` counts each model's calls.

A new sampler is one new file here registered with ``@register_sampler(SamplerInfo(...))`` (see `base`): its info
says which order capabilities it needs and which options it takes, and the CLI, `argen.Pipeline` and `argen eval`
offer it from there. Shared pieces: `base` (request checks, one decoding step, the registry), `engine` (runs the
model: guidance between its features and its heads, and what generations share: class contexts, first calls,
compiled graphs), `logits` (guidance, temperature, top-k, top-p, seeded draws); the KV cache is
`argen.model.KVCache`, made by ``engine.new_cache`` and owned by the sampler for one generation.
"""

from __future__ import annotations

from argen.samplers.ar import generate
from argen.samplers.base import SAMPLERS, GenerationOutput, SamplerInfo, SamplerOption, register_sampler
from argen.samplers.collaborative import generate_collaborative
from argen.samplers.engine import SamplingEngine
from argen.samplers.jacobi import generate_jacobi

__all__ = [
    "SAMPLERS",
    "GenerationOutput",
    "SamplerInfo",
    "SamplerOption",
    "SamplingEngine",
    "generate",
    "generate_collaborative",
    "generate_jacobi",
    "register_sampler",
]
