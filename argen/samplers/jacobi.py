"""Speculative Jacobi decoding (SJD), after "Accelerating Auto-regressive Text-to-Image Generation with Training-free
Speculative Jacobi Decoding" (Teng et al., arXiv 2410.01699; code github.com/tyshiwo1/Accelerating-T2I-AR-with-SJD).

Plain decoding makes one model call per step of the order's schedule. SJD keeps a window of draft tokens for the
next W steps and feeds them, behind the newest accepted step, in ONE model call: the block-causal mask makes the
outputs of step s depend only on the tokens of steps < s, so a single call gives the model's distribution p_s for
every step of the window as if the drafts before s were the real prefix. Then, left to right (legend: B batch,
V vocabulary, S steps, W window; a "step" is the order's step: one token in raster order, one anti-diagonal in
next-neighbor order):

1. verification, SJD's probabilistic criterion (speculative sampling, Leviathan et al. arXiv 2211.17192 and Chen
   et al. arXiv 2302.01318): draft x_s, drawn from q_s at an earlier pass, is accepted iff r < min(1, p_s(x_s) /
   q_s(x_s)), r ~ U[0, 1). p_s is exact while every earlier draft of the window was accepted.
2. at the first rejection, x_s is resampled from norm(max(0, p_s - q_s)) (the paper's calibrated resampling), which
   makes the step's token exactly p_s-distributed; nothing after it is accepted in this pass.
3. if every draft of the window is accepted, the call's last output (the step after the window) is conditioned on
   accepted tokens only, so that step is sampled from it for free: up to W + 1 steps per call.
4. Jacobi iteration: each step after the rejection takes a new draft from the distribution this call gave it (on an
   unverified prefix) and keeps that distribution as its q for the next verification.
5. the window's new tail is filled by ``init``: "random" draws uniform tokens (q uniform); "neighbor" copies the
   left neighbour's current token, or the upper one's in column 0 (the paper's initialisation with a spatial prior).

p and q are the *final* sampling distributions (after guidance, temperature, top-k and top-p, as
`argen.samplers.logits.sample` draws from); with any other pair the rule does not reproduce plain sampling. At
temperature 0 both are one-hot, acceptance means "draft == argmax" and the ids equal greedy `generate`'s.

Choices that the paper leaves open or that differ from its code:

- the verification unit is the order's step. Tokens of one step are conditionally independent given the earlier
  steps (plain decoding samples them in one draw), so each is verified and, if rejected, resampled on its own; a
  step is "accepted as drafted" only if all its tokens are, and only then does verification go on to the next step.
- "neighbor" initialisation gives the copied token the point mass q = δ_x. By the time it is verified, the cell it
  copied lies in the accepted prefix with the very value that was copied (had that cell been resampled or redrafted,
  this one would have been redrafted too), so x is a function of the prefix and the rule with q = δ_x (accept with
  probability p(x), else draw from p without x) is exact. The first cell has no neighbour and is drawn uniformly.
- batches: every image keeps its own frontier (``final``, the steps it has finished) and accepts as many steps per
  call as its drafts allow. The KV cache has one length for the whole batch, so it holds the steps every image has
  finished (the batch minimum); each call re-feeds from there, and an image that is ahead sees its finished tokens
  fed again (their outputs are not verified again) and verifies from its own frontier. Each call finishes at least
  one step of the slowest image, so there are never more calls than steps. Faster images do not wait, but their
  window is shorter by the lead they have.
- KV-cache rollback: a call appends the positions of the steps it feeds; afterwards the cache is rolled back to the
  steps finished by every image. Each of those positions was fed the tokens that were finally accepted, so the
  cache equals one built from accepted tokens only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from argen.errors import ArgenError
from argen.orders.base import Order
from argen.samplers.ar import GenerationOutput, prepare_labels
from argen.samplers.logits import cfg_scale_at, check_sampling, filter_top_k, filter_top_p, guide

SUPPORTED_ORDERS = ("raster", "neighbor")
# A window counts steps: 16 raster tokens are one row of a 16×16 grid; 4 anti-diagonals of it are up to 64 tokens.
DEFAULT_WINDOW = {"raster": 16, "neighbor": 4}
INITS = ("random", "neighbor")


def final_distribution(logits: Tensor, *, temperature: float, top_k: int, top_p: float) -> Tensor:
    """(..., V) logits → (..., V) the probabilities `argen.samplers.logits.sample` draws from (one-hot at T = 0)."""
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    return filter_top_p(filter_top_k(logits.float() / temperature, top_k), top_p).softmax(dim=-1)


def draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """(..., V) probabilities (rows need not sum to 1) → (...) ids drawn with ``generator``."""
    flat = probs.reshape(-1, probs.shape[-1])  # (N, V)
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def verify(drafts: Tensor, p: Tensor, q: Tensor, *, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Speculative sampling of drafts (N, T) drawn from q (N, T, V) against the target p (N, T, V).

    Returns the tokens (N, T), each exactly p-distributed (the draft if accepted, else a resample), and whether each
    draft was accepted (N, T).
    """
    p_draft = p.gather(-1, drafts[..., None]).squeeze(-1)
    q_draft = q.gather(-1, drafts[..., None]).squeeze(-1)
    r = torch.rand(drafts.shape, generator=generator, device=drafts.device)
    # SJD's criterion r < min(1, p(x) / q(x)), written without the division: q(x) > 0 since x was drawn from q, and
    # r < 1, so r·q(x) < p(x) holds whenever p(x) ≥ q(x).
    accepted = r * q_draft < p_draft
    # The paper's calibrated resampling from norm(max(0, p - q)); rows where it vanishes (p = q, never rejected, or
    # rows the caller discards) fall back to p so that the draw is defined.
    residual = (p - q).clamp(min=0)
    residual = torch.where(residual.sum(dim=-1, keepdim=True) > 0, residual, p)
    return torch.where(accepted, drafts, draw(residual, generator)), accepted


def copy_sources(h: int, w: int) -> Tensor:
    """(h·w,) for each cell of an h×w grid the flat cell its "neighbor" draft copies: left, or above in column 0.

    -1 for (0, 0). Both neighbours belong to an earlier step in raster and in next-neighbor order.
    """
    cells = torch.arange(h * w)
    rows, cols = cells // w, cells % w
    return torch.where(cols > 0, cells - 1, torch.where(rows > 0, cells - w, torch.full_like(cells, -1)))


@torch.no_grad()
def generate_jacobi(
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
    window: int | None = None,
    init: str = "random",
) -> GenerationOutput:
    """Sample token grids with speculative Jacobi decoding: the distribution of `generate`, in fewer model calls.

    Args (the rest as in `argen.samplers.ar.generate`):
        window: W, the draft steps verified per call (raster: tokens; neighbor: anti-diagonals); a call finishes
            1 to W + 1 steps per image. Default 16 for raster, 4 for neighbor.
        init: how new drafts are made: "random" (uniform tokens) or "neighbor" (copy of the left neighbour).
        callback: called as ``callback(step, ids)`` once per step, in order, when every image has finished it.

    Returns:
        `GenerationOutput` with the (B, h, w) grid and ``forward_passes``, the model calls made (at most S).
    """
    if order.name not in SUPPORTED_ORDERS:
        raise ArgenError(
            f"speculative Jacobi decoding works with the {' and '.join(SUPPORTED_ORDERS)} orders, not "
            f"{order.name!r}: use the 'ar' sampler for it"
        )
    window = DEFAULT_WINDOW[order.name] if window is None else window
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ArgenError(f"window must be a whole number of steps, at least 1, got {window!r}")
    if init not in INITS:
        raise ArgenError(f"unknown draft init {init!r}: choose one of {', '.join(INITS)}")
    check_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    layout = order.layout(tokenizer.grid_shapes)
    order.check_model(model.config, tokenizer)
    device = next(model.parameters()).device
    labels, batch_size, guided = prepare_labels(
        model, labels, batch_size=batch_size, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, device=device
    )

    batch, num_steps, vocab = batch_size, layout.num_steps, int(model.config.vocab_size)
    (h, w) = layout.grid_shapes[0]
    # Single-grid orders: the cells step s produces, as flat indices into the one grid.
    cells = [layout.target_flat[layout.positions_of_step[s]].to(device) for s in range(num_steps)]
    offsets = [0]  # offsets[s]: sequence positions fed before step s
    for fed in layout.inputs_of_step:
        offsets.append(offsets[-1] + len(fed))
    sources = copy_sources(h, w).to(device)

    tokens = torch.zeros(batch, h * w, dtype=torch.long, device=device)  # finished tokens and drafts
    ids = [tokens.view(batch, h, w)]  # a view: the order reads the grid as tokens are written
    final = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) steps each image has finished
    draft_q: dict[int, Tensor] = {}  # step → (B, T_s, V) the distribution its current drafts were drawn from

    def initialise(step: int) -> None:
        where = cells[step]
        drafts = torch.randint(vocab, (batch, len(where)), generator=generator, device=device)
        q = torch.full((batch, len(where), vocab), 1.0 / vocab, device=device)
        if init == "neighbor":
            copies = sources[where] >= 0
            drafts[:, copies] = tokens[:, sources[where][copies]]
            q[:, copies] = F.one_hot(drafts[:, copies], vocab).float()
        tokens[:, where] = drafts
        draft_q[step] = q

    rows = 2 * batch if guided else batch
    cache = model.new_cache(rows, capacity=layout.length) if use_cache else None
    was_training = model.training
    model.eval()  # class dropout and dropout are for training only
    forward_passes = 0
    done = 0  # steps every image has finished; the cache holds the inputs of exactly these steps
    for step in range(min(window, num_steps)):
        initialise(step)
    try:
        while done < num_steps:
            # Feed step `done` (its inputs hold finished tokens) and the steps whose inputs hold the drafts of
            # steps done .. done + W - 1; the last fed step is the free one after the window, if the grid has it.
            last = min(done + window, num_steps - 1)
            first = done if use_cache else 0
            inputs = torch.cat([order.step_inputs(s, ids, tokenizer) for s in range(first, last + 1)], dim=1)
            index = torch.cat(layout.inputs_of_step[first : last + 1])
            if guided:
                inputs = torch.cat([inputs, inputs])
            outputs = model(inputs, labels, layout=layout, index=index, cache=cache)
            forward_passes += 1

            verifying = torch.ones(batch, dtype=torch.bool, device=device)  # no rejection yet in this call
            reached = final.clone()
            target_p: dict[int, Tensor] = {}
            for s in range(done, last + 1):
                fed = outputs[:, offsets[s] - offsets[first] : offsets[s + 1] - offsets[first]]  # step s's positions
                logits = order.logits(fed, layout, s)  # (rows, T_s, V)
                if guided:
                    cond, uncond = logits.chunk(2)
                    logits = guide(cond, uncond, cfg_scale_at(s, num_steps, cfg_scale=cfg_scale, schedule=cfg_schedule))
                p = final_distribution(logits, temperature=temperature, top_k=top_k, top_p=top_p)  # (B, T_s, V)
                target_p[s] = p
                todo = verifying & (final <= s)  # images whose own frontier has reached step s
                if s < done + window:
                    sampled, accepted = verify(tokens[:, cells[s]], p, draft_q[s], generator=generator)
                    clean = accepted.all(dim=1)
                else:  # every draft of the window accepted: this step is conditioned on finished tokens only
                    sampled, clean = draw(p, generator), torch.zeros_like(verifying)
                tokens[:, cells[s]] = torch.where(todo[:, None], sampled, tokens[:, cells[s]])
                reached = torch.where(todo, s + 1, reached)
                verifying &= ~todo | clean
            final = reached

            # Jacobi iteration: every unfinished step of the call redrafts from the distribution it got here.
            for s in range(done + 1, last + 1):
                redraft = final <= s
                if bool(redraft.any()):
                    p = target_p[s]
                    tokens[:, cells[s]] = torch.where(redraft[:, None], draw(p, generator), tokens[:, cells[s]])
                    draft_q[s] = torch.where(redraft[:, None, None], p, draft_q[s]) if s in draft_q else p

            finished = int(final.min())
            if cache is not None:
                # Positions of steps < finished were fed accepted tokens only; the rest held rejected drafts.
                cache.rollback(offsets[finished])
            for s in range(last + 1, min(finished + window, num_steps)):
                initialise(s)
            for s in range(done, finished):
                draft_q.pop(s, None)
                if callback is not None:
                    callback(s, [tokens.view(batch, h, w).clone()])
            done = finished
    finally:
        model.train(was_training)
    return GenerationOutput(ids=[tokens.view(batch, h, w).clone()], forward_passes=forward_passes)


__all__ = ["DEFAULT_WINDOW", "INITS", "SUPPORTED_ORDERS", "generate_jacobi"]
