"""Logits → ids: classifier-free guidance, its schedule, temperature, top-k, top-p, seeded sampling.

Legend: B batch, V vocabulary; ``(..., V)`` logits have any leading shape.
"""

from __future__ import annotations

import math
import numbers

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


# Below this a temperature divides logits into infinities (1e-40 gives NaN probabilities) and, well before that,
# samples what greedy decoding gives: temperatures in (0, MIN_TEMPERATURE) are refused, 0 is greedy.
MIN_TEMPERATURE = 0.01


def check_sampling(
    *, temperature: float, top_k: int, top_p: float, cfg_scale: float = 1.0, cfg_schedule: str = "constant"
) -> None:
    """One-line ArgenError unless the sampling numbers are usable; every entry point (Pipeline, the commands, the
    server, editing, the codec) reaches it through `argen.samplers.base.prepare_request` or `sample`.

    temperature: 0 (greedy) or a finite number ≥ `MIN_TEMPERATURE`; top_k: a whole number ≥ 0 (0 keeps all);
    top_p: in (0, 1]; cfg_scale: finite; cfg_schedule: one of `CFG_SCHEDULES`.
    """
    if not _real(temperature) or not (temperature == 0 or MIN_TEMPERATURE <= temperature < math.inf):
        raise ArgenError(
            f"temperature must be 0 (greedy) or a finite number of at least {MIN_TEMPERATURE}, got {temperature!r}: "
            "below that sampling is greedy up to rounding, so use 0"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
        raise ArgenError(f"top_k must be a whole number, 0 (off) or more, got {top_k!r}")
    if not _real(top_p) or not 0.0 < top_p <= 1.0:
        raise ArgenError(f"top_p must be in (0, 1], got {top_p!r}")
    if not _real(cfg_scale) or not math.isfinite(cfg_scale):
        raise ArgenError(f"cfg_scale must be a finite number (1 is no guidance), got {cfg_scale!r}")
    if cfg_schedule not in CFG_SCHEDULES:
        raise ArgenError(f"unknown cfg schedule {cfg_schedule!r}: choose one of {', '.join(CFG_SCHEDULES)}")


def _real(value: object) -> bool:
    """A real number that is not a bool (NaN included: the range checks refuse it)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
    if 0 < top_k < logits.shape[-1] and top_p >= 1.0:
        scaled = logits.float() if temperature == 1.0 else logits.float() / temperature  # x / 1 is x
        return draw_top_k(scaled, top_k, generator)
    return draw(final_distribution(logits, temperature=temperature, top_k=top_k, top_p=top_p), generator)


def draw_top_k(logits: Tensor, top_k: int, generator: torch.Generator | None = None, *, attempts: int = 2) -> Tensor:
    """(..., V) logits → (...) ids drawn from softmax over the ``top_k`` largest (ties with the k-th kept), the
    distribution of ``draw(final_distribution(logits, top_k=top_k))``, mostly without a top-k search.

    Rejection sampling: an id drawn from the full softmax is kept when fewer than k logits exceed its own, i.e. when
    it is one of `filter_top_k`'s survivors, and given that, it follows the filtered distribution (the full
    distribution restricted to the survivors and renormalised). A row rejected ``attempts`` times is drawn directly
    among its candidates (`filter_top_k`, then the inverse CDF); either way the draw has the filtered distribution.
    A trained model puts most of its mass on its top k, so nearly every row is kept at the first attempt, which
    costs a softmax, a cumulative sum and one compare over V instead of `torch.topk`, whose selection over V
    unpredictable branches costs ~12 µs per row of 1024 on a CPU (more than the rest of the draw). The same
    distribution, but other ids for a seed than a top-k search followed by a draw.
    """
    vocab = logits.shape[-1]
    rows = logits.reshape(-1, vocab)  # (N, V)
    ids = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
    pending: Tensor | None = None  # which rows of `ids` are still to draw (None: all of them)
    probs = rows.softmax(dim=-1)
    for _ in range(attempts):
        candidate = draw_by_cdf(probs, generator)  # (N',)
        above = (rows > rows.gather(-1, candidate[:, None])).sum(dim=-1)  # logits strictly above the candidate's
        accepted = above < top_k
        if bool(accepted.all()):
            if pending is None:
                return candidate.view(logits.shape[:-1])
            ids[pending] = candidate
            return ids.view(logits.shape[:-1])
        if pending is None:
            pending = torch.arange(rows.shape[0], device=rows.device)
        ids[pending[accepted]] = candidate[accepted]
        rejected = ~accepted
        pending, rows, probs = pending[rejected], rows[rejected], probs[rejected]
    ids[pending] = draw_by_cdf(filter_top_k(rows, top_k).softmax(dim=-1), generator)
    return ids.view(logits.shape[:-1])
