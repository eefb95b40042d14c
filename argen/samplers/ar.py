"""Plain autoregressive sampling: one model call per step of the order's schedule, for every order.

The loop knows nothing of the order: it asks the order for the inputs of step s (from the ids so far), calls the
model on them with a KV cache, asks the order which targets the outputs predict, samples them and scatters them into
the grids. Classifier-free guidance doubles the batch with the null class (LlamaGen's ``generate``, VAR's
``autoregressive_infer_cfg``); at cfg_scale 1 it does not, so the result is exactly unguided sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from argen.errors import ArgenError
from argen.orders.base import Order
from argen.samplers.logits import CFG_SCHEDULES, cfg_scale_at, guide, sample


@dataclass
class GenerationOutput:
    """ids: one (B, h, w) grid per tokenizer grid; forward_passes: model calls made for the batch; passes_by_model:
    for samplers that call several models (collaborative decoding), those calls per model, e.g. ``{"drafter": 3,
    "refiner": 3}``, else None."""

    ids: list[Tensor]
    forward_passes: int
    passes_by_model: dict[str, int] | None = None


def prepare_labels(
    model: Any,
    labels: Tensor | None,
    *,
    batch_size: int | None,
    cfg_scale: float,
    cfg_schedule: str,
    device: torch.device,
) -> tuple[Tensor | None, int, bool]:
    """Check the request every sampler shares and return (labels, B, guided).

    With guidance the labels come back doubled, (2B,) conditional then null class, because classifier-free guidance
    runs both halves in one batch (LlamaGen, VAR).
    """
    if labels is not None:
        labels = labels.to(device=device, dtype=torch.long)
        if labels.dim() != 1 or (batch_size is not None and batch_size != labels.shape[0]):
            raise ArgenError(f"labels must be a (B,) tensor matching batch_size, got {tuple(labels.shape)}")
        batch_size = labels.shape[0]
    if batch_size is None or batch_size < 1:
        raise ArgenError("give labels (B,) or, for unconditional sampling, batch_size")
    if cfg_schedule not in CFG_SCHEDULES:
        raise ArgenError(f"unknown cfg schedule {cfg_schedule!r}: choose one of {', '.join(CFG_SCHEDULES)}")
    guided = cfg_scale != 1.0
    if guided and (labels is None or model.config.num_classes == 0):
        raise ArgenError("classifier-free guidance needs a class-conditional model and labels: use cfg_scale=1")
    if guided:
        labels = torch.cat([labels, torch.full_like(labels, model.config.num_classes)])  # (2B,) cond then null
    return labels, batch_size, guided


@torch.no_grad()
def generate(
    model: Any,
    order: Order,
    tokenizer: Any,
    *,
    labels: Tensor | None = None,
    batch_size: int | None = None,
    cfg_scale: float = 1.0,
    cfg_schedule: str = "constant",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    callback: Callable[[int, list[Tensor]], None] | None = None,
) -> GenerationOutput:
    """Sample token grids for a batch, step by step along ``order``'s schedule.

    Args:
        model: a `argen.transformer.Transformer` built for ``order`` and ``tokenizer``.
        labels: (B,) classes, or None for unconditional sampling (then ``batch_size`` gives B).
        cfg_scale: guidance scale s (logits = uncond + s · (cond - uncond)); 1 is unguided.
        cfg_schedule: "constant", or "linear" for VAR's ramp from 1 at the first step to cfg_scale at the last.
        temperature, top_k, top_p, generator: see `argen.samplers.logits.sample`; temperature 0 is greedy.
        use_cache: reuse keys and values of earlier steps; without it every step re-runs the whole prefix.
        callback: called as ``callback(step, ids)`` after each step; ``order.preview(ids, step + 1, tokenizer)``
            decodes what is there so far.
    """
    layout = order.layout(tokenizer.grid_shapes)
    order.check_model(model.config, tokenizer)
    device = next(model.parameters()).device
    labels, batch_size, guided = prepare_labels(
        model, labels, batch_size=batch_size, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, device=device
    )

    ids = [torch.zeros(batch_size, h, w, dtype=torch.long, device=device) for h, w in layout.grid_shapes]
    rows = 2 * batch_size if guided else batch_size
    cache = model.new_cache(rows, capacity=layout.length) if use_cache else None
    was_training = model.training
    model.eval()  # class dropout and dropout are for training only
    forward_passes = 0
    try:
        for step in range(layout.num_steps):
            if use_cache:
                inputs = order.step_inputs(step, ids, tokenizer)
                index = layout.inputs_of_step[step]
            else:
                inputs = torch.cat([order.step_inputs(s, ids, tokenizer) for s in range(step + 1)], dim=1)
                index = torch.cat(layout.inputs_of_step[: step + 1])
            if guided:
                inputs = torch.cat([inputs, inputs])
            outputs = model(inputs, labels, layout=layout, index=index, cache=cache)
            forward_passes += 1
            outputs = outputs[:, -len(layout.inputs_of_step[step]) :]  # this step's positions
            logits = order.logits(outputs, layout, step)  # (rows, T_s, V)
            if guided:
                cond, uncond = logits.chunk(2)
                scale = cfg_scale_at(step, layout.num_steps, cfg_scale=cfg_scale, schedule=cfg_schedule)
                logits = guide(cond, uncond, scale)
            sampled = sample(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            ids = order.scatter(ids, step, sampled)
            if callback is not None:
                callback(step, ids)
    finally:
        model.train(was_training)
    return GenerationOutput(ids=ids, forward_passes=forward_passes)
