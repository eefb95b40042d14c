"""Plain autoregressive sampling: one model call per step of the order's schedule, for every order.

The loop knows nothing of the order: it asks the order for the inputs of step s (from the ids so far), calls the
model on them with a KV cache, asks the order which targets the outputs predict, samples them and scatters them into
the grids. Classifier-free guidance doubles the batch with the null class (LlamaGen's ``generate``, VAR's
``autoregressive_infer_cfg``); at cfg_scale 1 it does not, so the result is exactly unguided sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from argen.orders.base import Order
from argen.samplers.base import (
    GenerationOutput,
    Model,
    RequestOptions,
    SamplerInfo,
    decode_step,
    evaluation,
    prepare_labels,
    prepare_request,
    register_sampler,
)
from argen.samplers.engine import SamplingEngine

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from argen.tokenizers.protocol import TokenizerProtocol

INFO = SamplerInfo(
    name="ar",
    method="plain decoding",
    help="one pass per step",
    rank=10,
)


@register_sampler(INFO)
@torch.no_grad()
def generate(
    model: Model,
    order: Order,
    tokenizer: TokenizerProtocol,
    *,
    use_cache: bool = True,
    callback: Callable[[int, list[Tensor]], None] | None = None,
    **request: Unpack[RequestOptions],
) -> GenerationOutput:
    """Sample token grids for a batch, step by step along ``order``'s schedule.

    Args:
        model: a `argen.model.Transformer` built for ``order`` and ``tokenizer``, or its
            `argen.samplers.engine.SamplingEngine` (which keeps what generations share).
        request: the keywords every sampler takes, ``labels`` (B,) or ``batch_size``, ``cfg_scale``,
            ``cfg_schedule``, ``temperature``, ``top_k``, ``top_p``, ``generator``: see
            `argen.samplers.base.prepare_request`.
        use_cache: reuse keys and values of earlier steps; without it every step re-runs the whole prefix.
        callback: called as ``callback(step, ids)`` after each step; ``order.preview(ids, step + 1, tokenizer)``
            decodes what is there so far.
    """
    engine = SamplingEngine.of(model)
    request = prepare_request(engine.model, order, tokenizer, **request)
    layout = request.layout
    ids = request.empty_ids()
    cache = engine.new_cache(request.rows, capacity=layout.length) if use_cache else None
    with evaluation(engine.model):
        for step in range(layout.num_steps):
            ids = decode_step(engine, order, tokenizer, request, ids, step, first=step if use_cache else 0, cache=cache)
            if callback is not None:
                callback(step, ids)
    return GenerationOutput(ids=ids, forward_passes=layout.num_steps, latent=request.inputs.final_latent(ids))


__all__ = ["GenerationOutput", "generate", "prepare_labels"]
