"""Collaborative decoding (CoDe), after "Collaborative Decoding Makes Visual Auto-Regressive Modeling Efficient"
(Chen et al., arXiv 2411.17787; code github.com/czg1225/CoDe), training-free variant.

Coarse-to-fine orders spend few tokens on the first steps (the global structure, which needs a large model) and
many on the last ones (local detail, which a small model predicts nearly as well). CoDe splits the schedule at N
(legend: B batch, S steps, N ``draft_steps``; a "step" is one scale in VAR's order, one band in NFIG's):

1. the drafter, the large model, makes steps 0 .. N-1 exactly as plain decoding does, with its own KV cache.
2. the refiner, a small model trained with the same order on the same tokenizer, reads the whole prefix, the inputs
   of steps 0 .. N, in ONE block-causal forward pass, as the paper's code does when the refiner enters: the pass
   fills the refiner's KV cache and gives the logits of step N.
3. the refiner makes steps N+1 .. S-1 one call each with that cache.

The split changes only which model produces the logits of a step; guidance (the per-step scale of ``cfg_schedule``
over all S steps), temperature, top-k, top-p and the ``generator`` are those of `argen.samplers.ar.generate`, so the
refiner being the drafter itself gives plain decoding's ids for every N (up to the float rounding of a prefill
against step-by-step calls, which changed no id in the tests nor on the trained 1m models), and N = S gives them
exactly. N = 0 is allowed: it is the refiner alone, the small-model end of a sweep over N whose other end, N = S,
is the large model alone.

Not here: the paper's specialised fine-tuning of the refiner (its training-based variant), and the per-scale top-k
and temperature lists of its code, which are sampling settings rather than part of the method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from argen.errors import ArgenError
from argen.model import Transformer
from argen.orders.base import Order
from argen.samplers.base import (
    GenerationOutput,
    Model,
    RequestOptions,
    SamplerInfo,
    SamplerOption,
    decode_step,
    evaluation,
    prepare_request,
    register_sampler,
)
from argen.samplers.engine import SamplingEngine

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from argen.tokenizers.protocol import TokenizerProtocol

INFO = SamplerInfo(
    name="collaborative",
    method="collaborative decoding",
    help="--model drafts the first --draft-steps steps and the smaller --refiner makes the rest",
    paper="CoDe",
    arxiv="2411.17787",
    needs={"coarse_to_fine": True},
    options=(
        SamplerOption(
            "refiner",
            metavar="DIR",
            help="model directory of a smaller generator trained with the same order on the same tokenizer as "
            "--model (argen train --tokenizer MODEL/tokenizer ...)",
            required=True,
            model=True,
        ),
        SamplerOption(
            "draft_steps",
            type=int,
            metavar="N",
            help="steps --model makes before --refiner takes over, from 0 (refiner alone) to every step (model "
            "alone); a 7×7 latent has 6 scales or bands",
            required=True,
        ),
    ),
    rank=30,
)


def check_refiner(model: Transformer, refiner: Transformer, order: Order, tokenizer: TokenizerProtocol) -> None:
    """ArgenError unless ``refiner`` can continue what ``model`` drafts: same order, tokenizer, vocabulary, classes."""
    try:
        order.check_model(refiner.config, tokenizer)
    except ArgenError as error:
        raise ArgenError(f"the refiner was not built for this drafter's order and tokenizer: {error}") from None
    if refiner.config.vocab_size != model.config.vocab_size:
        raise ArgenError(
            f"the refiner predicts {refiner.config.vocab_size} token ids, the drafter {model.config.vocab_size}: "
            "train the refiner on the drafter's tokenizer"
        )
    if refiner.config.num_classes != model.config.num_classes:
        raise ArgenError(
            f"the refiner has {refiner.config.num_classes} classes, the drafter {model.config.num_classes}: "
            "train the refiner on the drafter's data"
        )
    if next(refiner.parameters()).device != next(model.parameters()).device:
        raise ArgenError("the drafter and the refiner are on different devices: move both to one")


@register_sampler(INFO)
@torch.no_grad()
def generate_collaborative(
    model: Model,
    order: Order,
    tokenizer: TokenizerProtocol,
    *,
    refiner: Model,
    draft_steps: int,
    callback: Callable[[int, list[Tensor]], None] | None = None,
    **request: Unpack[RequestOptions],
) -> GenerationOutput:
    """Sample token grids with collaborative decoding: ``model`` drafts the first steps, ``refiner`` the rest.

    Args (the rest as in `argen.samplers.ar.generate`):
        model: the drafter, a `argen.model.Transformer` built for ``order`` and ``tokenizer`` (or its engine).
        refiner: a (smaller) transformer (or its engine) trained with the same order on the same tokenizer and
            classes.
        draft_steps: N, the steps the drafter makes, 0 to S; 0 is the refiner alone, S the drafter alone.

    Returns:
        `GenerationOutput` with one (B, h, w) grid per scale or band, ``forward_passes`` (S model calls) and
        ``passes_by_model`` ``{"drafter": N, "refiner": S - N}``.
    """
    INFO.check_supports(order)
    drafter, refiner = SamplingEngine.of(model), SamplingEngine.of(refiner)
    request = prepare_request(drafter.model, order, tokenizer, **request)
    layout = request.layout
    num_steps = layout.num_steps
    check_refiner(drafter.model, refiner.model, order, tokenizer)
    if isinstance(draft_steps, bool) or not isinstance(draft_steps, int) or not 0 <= draft_steps <= num_steps:
        raise ArgenError(
            f"draft_steps must be a whole number from 0 (refiner alone) to {num_steps} (drafter alone), "
            f"got {draft_steps!r}"
        )
    ids = request.empty_ids()
    network, cache = drafter, drafter.new_cache(request.rows, capacity=layout.length)
    with evaluation(drafter.model, refiner.model):
        for step in range(num_steps):
            first = step
            if step == draft_steps:
                # Hand-over: the refiner has seen nothing yet, so it reads the drafter's whole prefix with the
                # inputs of this step in one block-causal call, which also fills its own cache.
                network, first = refiner, 0
                cache = refiner.new_cache(request.rows, capacity=layout.length)
            ids = decode_step(network, order, tokenizer, request, ids, step, first=first, cache=cache)
            if callback is not None:
                callback(step, ids)
    passes = {"drafter": draft_steps, "refiner": num_steps - draft_steps}
    latent = request.inputs.final_latent(ids)
    return GenerationOutput(ids=ids, forward_passes=num_steps, passes_by_model=passes, latent=latent)


__all__ = ["INFO", "check_refiner", "generate_collaborative"]
