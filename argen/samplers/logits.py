"""Logits → ids: classifier-free guidance, its schedule, temperature, top-k, top-p, seeded sampling.

Legend: B batch, V vocabulary; ``(..., V)`` logits have any leading shape.
"""

from __future__ import annotations

import torch
from torch import Tensor

from argen.errors import ArgenError

CFG_SCHEDULES = ("constant", "linear")


def cfg_scale_at(step: int, num_steps: int, *, cfg_scale: float, schedule: str = "constant") -> float:
    """The guidance scale s of ``step`` out of ``num_steps``.

    "constant": s = cfg_scale at every step. "linear": VAR's ramp from 1 (unguided) at the first step to cfg_scale at
    the last, s = 1 + (cfg_scale - 1) · step / (num_steps - 1); VAR writes it ``t = cfg · ratio``,
    ``logits = (1 + t) · cond - t · uncond``, so VAR's ``cfg`` c is cfg_scale = 1 + c here.
    """
    if schedule not in CFG_SCHEDULES:
        raise ArgenError(f"unknown cfg schedule {schedule!r}: choose one of {', '.join(CFG_SCHEDULES)}")
    if schedule == "constant" or cfg_scale == 1.0:
        return float(cfg_scale)
    ratio = step / (num_steps - 1) if num_steps > 1 else 1.0
    return 1.0 + (cfg_scale - 1.0) * ratio


def guide(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans, arXiv 2207.12598): uncond + s · (cond - uncond)."""
    return uncond + scale * (cond - uncond)


def filter_top_k(logits: Tensor, top_k: int) -> Tensor:
    """Logits with all but the ``top_k`` largest set to -inf (ties with the k-th are kept); 0 keeps all."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al., arXiv 1904.09751): keep the smallest set of most likely tokens whose
    probability sums to at least ``top_p``; 1.0 keeps all."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # A token is dropped when the more likely ones already reach top_p; the most likely one always stays.
    before = probs.cumsum(dim=-1) - probs
    drop_sorted = before >= top_p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def check_sampling(*, temperature: float, top_k: int, top_p: float) -> None:
    """ArgenError unless temperature, top-k and top-p are usable; shared by every sampler."""
    if temperature < 0:
        raise ArgenError(f"temperature must be 0 (greedy) or more, got {temperature}")
    if top_k < 0:
        raise ArgenError(f"top_k must be 0 (off) or more, got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ArgenError(f"top_p must be in (0, 1], got {top_p}")


def final_distribution(logits: Tensor, *, temperature: float, top_k: int, top_p: float) -> Tensor:
    """(..., V) logits → (..., V) the probabilities `sample` draws from: softmax(logits / T) after top-k and top-p,
    one-hot on the argmax at temperature 0 (what speculative verification compares against)."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    return filter_top_p(filter_top_k(logits.float() / temperature, top_k), top_p).softmax(dim=-1)


def draw(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(..., V) probabilities (rows need not sum to 1) → (...) ids drawn with ``generator``."""
    flat = probs.reshape(-1, probs.shape[-1])  # (N, V)
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def draw_by_cdf(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(..., V) probabilities (rows need not sum to 1) → (...) ids, by inverting the cumulative distribution with
    one uniform per row: the distribution of `draw`, at the cost of a cumulative sum instead of V random numbers
    (`torch.multinomial` draws one exponential per vocabulary entry), but another id for a given seed.

    The cumulative sum is taken in float64, so that rounding cannot hand a zero-probability id an interval: an id
    with probability 0 has an empty interval [c_{i-1}, c_i) and is never chosen.
    """
    flat = probs.reshape(-1, probs.shape[-1])  # (N, V)
    cumulative = flat.double().cumsum(dim=-1)  # (N, V)
    total = cumulative[:, -1:]
    uniform = torch.rand(flat.shape[0], 1, generator=generator, device=flat.device, dtype=torch.float64)
    # u < total strictly: a product that rounds up to the total would fall past the last interval.
    point = torch.minimum(uniform * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cumulative, point, right=True).view(probs.shape[:-1])


def sample(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(..., V) logits → (...) ids. Temperature 0 is greedy (argmax, no random draw); otherwise a draw from
    `final_distribution` with ``generator``, so that a seed fixes the result."""
    check_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    if 0 < top_k < logits.shape[-1] - 1 and top_p >= 1.0:
        scaled = logits.float() if temperature == 1.0 else logits.float() / temperature  # x / 1 is x
        drawn = draw_top_k(scaled, top_k, generator)
        if drawn is not None:
            return drawn
    return draw(final_distribution(logits, temperature=temperature, top_k=top_k, top_p=top_p), generator)


def draw_top_k(logits: Tensor, top_k: int, generator: torch.Generator | None = None) -> Tensor | None:
    """(..., V) logits → (...) ids drawn from softmax over the ``top_k`` largest, the distribution of
    ``draw(final_distribution(logits, top_k=top_k))``; None when the (k+1)-th largest logit ties the k-th (the
    filter keeps ties, so the caller takes the full path).

    The draw is made among the k candidates only (normalised after the cut, inverting their cumulative
    distribution), which costs a cumulative sum over k per row instead of V exponentials (`torch.multinomial`): the
    same distribution, but not the same ids for a seed as the full draw.
    """
    values, indices = torch.topk(logits, top_k + 1, dim=-1)  # (..., k + 1), sorted: the tie check is one compare
    if bool((values[..., top_k] == values[..., top_k - 1]).any()):
        return None
    choice = draw_by_cdf(values[..., :top_k].softmax(dim=-1), generator)  # (...)
    return indices.gather(-1, choice[..., None]).squeeze(-1)
