"""Forced-token sampling: decode along an order's schedule with some tokens given, the editing sampler.

VAR ("Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction", Tian et al., arXiv
2404.02905) edits zero-shot: the ground-truth tokens outside the mask are teacher-forced and the model generates only
the tokens inside it. `generate_forced` does that for every order through the order contract alone (``step_inputs``,
``logits``, ``scatter``): at each step every target is drawn from the same random stream as `argen.samplers.ar`
(so nothing forced is plain generation, draw for draw), then the known tokens overwrite the draw, so later steps are
conditioned on them. Which tokens are known, and what the images are, is `argen.editing`'s business.

``refresh`` lets the forced values depend on the grids so far; `requantizer` is the one used for coarse-to-fine orders
on residual tokenizers: at step s a known cell gets the code nearest to what the image's latent still holds beyond
the grids composed so far (VAR's encoding step, run against the partly regenerated composition).

``particles`` P > 1 runs sequential Monte Carlo ("Sequential Monte Carlo Steering of Large Language Models using
Probabilistic Programs", Lew et al., arXiv 2306.03081, whose infilling task is this one): each image gets P decodings;
each forced token multiplies its particle's weight by the probability the model gave it, w ← w · p(x_known | prefix);
when an image's effective sample size falls below P / 2 its particles are resampled in proportion to their weights
(the KV cache rows follow), and at the end one particle per image is drawn by weight. As P grows this samples
p(inside | outside) under the model, which a single forced decoding does not. It costs P times the batch.

Not a registered sampler: the registry's samplers generate from labels alone (`argen sample`, `Pipeline.__call__`),
and this one needs the forced tokens, which only an edit has.

Legend: B batch, V vocabulary, S steps, T_s targets of step s, h/w grid, P particles, N tokens of all grids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from argen.errors import ArgenError
from argen.model import KVCache, Transformer
from argen.orders.base import Order, StepInputs
from argen.orders.scale import CoarseToFineOrder
from argen.samplers.base import evaluation, feed, prepare_request, step_logits
from argen.samplers.engine import SamplingEngine
from argen.samplers.logits import sample
from argen.tokenizers.autoencoder import Tokenizer
from argen.tokenizers.multiscale import ResidualQuantizer

Refresh = Callable[[int, list[Tensor]], Tensor | None]


@dataclass
class ForcedOutput:
    """ids: one (B, h, w) grid per tokenizer grid; known: the same shapes, True where a token was forced;
    forward_passes: model calls made for the batch."""

    ids: list[Tensor]
    known: list[Tensor]
    forward_passes: int


def step_cells(order: Order, tokenizer: Tokenizer, step: int) -> Tensor:
    """Indices of step ``step``'s targets into the concatenated flattened grids (T_s,)."""
    layout = order.layout(tokenizer.grid_shapes)
    return layout.target_flat[layout.targets_of_step[step]]


def flatten(grids: list[Tensor]) -> Tensor:
    """One (B, h, w) per grid → (B, N)."""
    return torch.cat([grid.flatten(1) for grid in grids], dim=1)


def unflatten(flat: Tensor, grid_shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """(B, N) → one (B, h, w) per grid."""
    sizes = [h * w for h, w in grid_shapes]
    return [part.reshape(-1, h, w) for part, (h, w) in zip(flat.split(sizes, dim=1), grid_shapes)]


def reorder_cache(cache: KVCache, rows: Tensor) -> None:
    """Make row i of the KV cache's batch the old row ``rows[i]`` (particles after resampling)."""
    cache.keys = cache.keys[:, rows]
    cache.values = cache.values[:, rows]


@torch.no_grad()
def generate_forced(
    model: Transformer,
    order: Order,
    tokenizer: Tokenizer,
    *,
    image_ids: list[Tensor],
    known: list[Tensor],
    labels: Tensor | None = None,
    cfg_scale: float = 1.0,
    cfg_schedule: str = "constant",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    particles: int = 1,
    generator: torch.Generator | None = None,
    callback: Callable[[int, list[Tensor]], None] | None = None,
    refresh: Refresh | None = None,
) -> ForcedOutput:
    """Decode along ``order``'s schedule with the ``known`` tokens forced to ``image_ids``.

    Args:
        image_ids: one (B, h, w) grid per tokenizer grid, the tokens to force (read only where ``known``).
        known: bool, the same shapes: which tokens are forced.
        labels: (B,) classes, or None (the null class of a conditional model; an unconditional model needs None).
        cfg_scale, cfg_schedule, temperature, top_k, top_p, generator: as `argen.samplers.ar.generate`.
        particles: P decodings per image, weighted by the probability of their forced tokens and resampled
            (sequential Monte Carlo, see the module docstring); 1 is plain forced decoding.
        callback: ``callback(step, ids)`` after each step, ids of the first particle of each image.
        refresh: ``refresh(step, ids)`` → (B·P, T_s) ids to force at this step instead of ``image_ids`` (read where
            ``known``), computed from the grids so far, or None to keep ``image_ids`` (see `requantizer`).
    """
    if particles < 1:
        raise ArgenError(f"particles must be 1 (plain forced decoding) or more, got {particles}")
    batch = image_ids[0].shape[0]
    if labels is not None and labels.dim() == 1 and labels.shape[0] == batch:
        labels = labels.repeat_interleave(particles)
    request = prepare_request(
        model, order, tokenizer, labels=labels, batch_size=batch * particles, cfg_scale=cfg_scale,
        cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
    )  # fmt: skip
    layout, device = request.layout, request.device
    if particles > 1:
        request.inputs = StepInputs(order, tokenizer)  # resampling reorders the grids under a running latent
    forced = flatten([grid.to(device) for grid in known]).repeat_interleave(particles, dim=0)  # (B·P, N)
    forced_ids = flatten([grid.to(device) for grid in image_ids]).repeat_interleave(particles, dim=0)
    log_weights = torch.zeros(batch, particles, device=device)
    ids = request.empty_ids()
    engine, cache = SamplingEngine.of(model), model.new_cache(request.rows, capacity=layout.length)
    with evaluation(model):
        for step in range(layout.num_steps):
            outputs = feed(engine, order, tokenizer, request, ids, first=step, last=step, cache=cache)
            outputs = outputs[:, -len(layout.inputs_of_step[step]) :]  # this step's positions
            logits = step_logits(order, request, outputs, step)  # (B·P, T_s, V), guided
            # Every target is drawn, forced or not, so that the random stream is the one of plain decoding.
            sampled = sample(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            where = step_cells(order, tokenizer, step).to(device)
            forced_here, forced_values = forced[:, where], forced_ids[:, where]  # (B·P, T_s)
            refreshed = refresh(step, ids) if refresh is not None else None
            if refreshed is not None:
                forced_values = torch.where(forced_here, refreshed, forced_values)
            if particles > 1 and bool(forced_here.any()):
                log_weights += forced_log_probs(logits, forced_here, forced_values, temperature).view(batch, particles)
            sampled = torch.where(forced_here, forced_values, sampled)
            ids = order.scatter(ids, step, sampled)
            if particles > 1:
                ids, log_weights = resample(ids, log_weights, cache, generator=generator, guided=request.guided)
            if callback is not None:
                callback(step, [grid[::particles] for grid in ids])
    if particles > 1:
        chosen = draw(log_weights, 1, generator=generator)[:, 0]  # (B,) one particle per image
        rows_kept = torch.arange(batch, device=device) * particles + chosen
        ids = [grid[rows_kept] for grid in ids]
    return ForcedOutput(ids=ids, known=[grid.bool() for grid in known], forward_passes=layout.num_steps)


def forced_log_probs(logits: Tensor, forced_here: Tensor, forced_values: Tensor, temperature: float) -> Tensor:
    """(B·P,) the log probability of each row's forced tokens of this step: logits (B·P, T_s, V), the rest (B·P, T_s).

    The sampling distribution before top-k/top-p (which may exclude the forced token), so no weight becomes zero.
    """
    log_probs = (logits.float() / (temperature or 1.0)).log_softmax(-1)
    gained = log_probs.gather(-1, forced_values[..., None])[..., 0]
    return torch.where(forced_here, gained, torch.zeros_like(gained)).sum(1)


def draw(log_weights: Tensor, count: int, *, generator: torch.Generator | None) -> Tensor:
    """(B, P) log weights → (B, count) particle indices drawn in proportion to the weights."""
    probs = (log_weights - log_weights.max(1, keepdim=True).values).exp()
    return torch.multinomial(probs, count, replacement=True, generator=generator)


def resample(
    ids: list[Tensor], log_weights: Tensor, cache: KVCache, *, generator: torch.Generator | None, guided: bool
) -> tuple[list[Tensor], Tensor]:
    """Resample the particles of every image whose effective sample size fell below P / 2; their weights reset."""
    batch, particles = log_weights.shape
    weights = (log_weights - log_weights.logsumexp(1, keepdim=True)).exp()
    degenerate = 1.0 / weights.square().sum(1) < particles / 2  # (B,)
    if not bool(degenerate.any()):
        return ids, log_weights
    device = log_weights.device
    source = torch.arange(particles, device=device).expand(batch, particles).clone()
    source[degenerate] = draw(log_weights[degenerate], particles, generator=generator)
    rows = (torch.arange(batch, device=device)[:, None] * particles + source).flatten()  # (B·P,)
    reorder_cache(cache, torch.cat([rows, rows + batch * particles]) if guided else rows)
    log_weights = torch.where(degenerate[:, None], torch.zeros_like(log_weights), log_weights)
    return [grid[rows] for grid in ids], log_weights


def can_requantize(order: Order, tokenizer: Tokenizer) -> bool:
    """Whether known tokens can be re-quantized step by step: one grid per step (coarse-to-fine orders) over a
    residual quantizer (VAR's multiscale, NFIG's frequency bands)."""
    return isinstance(order, CoarseToFineOrder) and isinstance(getattr(tokenizer, "quantizer", None), ResidualQuantizer)


def requantizer(tokenizer: Tokenizer, latent: Tensor, *, first_step: int = 0) -> Refresh:
    """``refresh`` for `generate_forced`: at step s ≥ ``first_step``, the tokens that quantize what the image's
    ``latent`` (B, D, n, n) still holds beyond the grids composed so far, (rows, h_s·w_s); rows may be B times a
    number of particles."""
    quantizer = tokenizer.quantizer
    prepared: dict[int, object] = {}

    def refresh(step: int, ids: list[Tensor]) -> Tensor | None:
        if step < first_step:
            return None
        rows = ids[0].shape[0]
        if rows not in prepared:  # particles of one image share its latent, resampling keeps them together
            prepared.clear()
            prepared[rows] = quantizer.targets(latent.repeat_interleave(rows // latent.shape[0], dim=0))
        target = quantizer.target(prepared[rows], tokenizer.compose(ids, step), step)  # (rows, D, n, n)
        h, w = tokenizer.grid_shapes[step]
        if tuple(target.shape[-2:]) != (h, w):
            target = F.interpolate(target, size=(h, w), mode="area")
        return quantizer.codebook.nearest(target.permute(0, 2, 3, 1).reshape(-1, target.shape[1])).view(rows, h * w)

    return refresh
