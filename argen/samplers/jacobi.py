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
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from argen.errors import ArgenError
from argen.orders.base import Order
from argen.samplers.base import (
    GenerationOutput,
    Model,
    Request,
    RequestOptions,
    SamplerInfo,
    SamplerOption,
    evaluation,
    feed,
    prepare_request,
    register_sampler,
)
from argen.samplers.engine import SamplingEngine
from argen.samplers.logits import draw_by_cdf, final_distribution

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from argen.tokenizers.protocol import TokenizerProtocol

INFO = SamplerInfo(
    name="jacobi",
    method="speculative Jacobi decoding",
    help="the same distribution in fewer passes",
    paper="SJD",
    arxiv="2410.01699",
    # Each step writes cells of one grid, which drafts fill and verification reads back.
    needs={"single_grid": True},
    options=(
        SamplerOption(
            "window",
            type=int,
            help="draft steps verified per pass (default: the order's speculative_window, e.g. 16 tokens for "
            "raster, 4 anti-diagonals for neighbor)",
        ),
    ),
    rank=20,
)
INITS = ("random", "neighbor")


def draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """SJD's draws (resamples, redrafts, the free step): `argen.samplers.logits.draw_by_cdf`, one uniform per token
    rather than one random number per vocabulary entry, since a call draws for every token of the window."""
    return draw_by_cdf(probs, generator)


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
    # The paper's calibrated resampling from norm(max(0, p - q)), drawn for the rejected drafts only; rows where it
    # vanishes (p = q, never rejected in exact arithmetic) fall back to p so that the draw is defined.
    tokens, rejected = drafts.clone(), ~accepted
    if bool(rejected.any()):
        p_rejected = p[rejected]  # (R, V)
        residual = (p_rejected - q[rejected]).clamp(min=0)
        residual = torch.where(residual.sum(dim=-1, keepdim=True) > 0, residual, p_rejected)
        tokens[rejected] = draw(residual, generator)
    return tokens, accepted


def copy_sources(h: int, w: int) -> Tensor:
    """(h·w,) for each cell of an h×w grid the flat cell its "neighbor" draft copies: left, or above in column 0.

    -1 for (0, 0). Both neighbours belong to an earlier step in raster and in next-neighbor order; `JacobiState`
    checks that of any order before it copies.
    """
    cells = torch.arange(h * w)
    rows, cols = cells // w, cells % w
    return torch.where(cols > 0, cells - 1, torch.where(rows > 0, cells - w, torch.full_like(cells, -1)))


class JacobiState:
    """The tokens of one SJD run: finished ones and drafts in one flat grid per image, each image's frontier, and
    the distribution each step's current drafts were drawn from.

    One call's verification is vectorised over the whole window: one guidance and softmax for every fed step, one
    `verify` (one uniform per draft, one resampling draw) and one draw for the redrafts, instead of a chain of small
    operations per step. The left-to-right rule is unchanged: an image finishes its steps from its frontier up to and
    including the first one with a rejected draft (or the free step after the window).
    """

    def __init__(self, order: Order, request: Request, *, vocab: int, init: str) -> None:
        layout = request.layout
        (h, w), batch, device = layout.grid_shapes[0], request.batch_size, request.device
        self.shape, self.vocab, self.init, self.generator = (batch, h, w), vocab, init, request.generator
        # The cells step s produces, as flat indices into the one grid.
        self.cells = [layout.target_flat[layout.targets_of_step[s]].to(device) for s in range(layout.num_steps)]
        self.sizes = [len(cells) for cells in self.cells]
        # The same, concatenated: the cells of steps a .. b are all_cells[starts[a] : starts[b + 1]].
        self.all_cells = torch.cat(self.cells)
        self.cell_step = torch.repeat_interleave(torch.arange(len(self.sizes)), torch.tensor(self.sizes)).to(device)
        self.starts = [0]
        for size in self.sizes:
            self.starts.append(self.starts[-1] + size)
        self.positions = torch.arange(len(self.sizes), device=device)
        self.sources = copy_sources(h, w).to(device)
        if init == "neighbor":
            step_of = torch.empty(h * w, dtype=torch.long, device=device)
            for step, cells in enumerate(self.cells):
                step_of[cells] = step
            copying = self.sources >= 0
            if bool((step_of[self.sources[copying]] >= step_of[copying]).any()):
                raise ArgenError(
                    f"draft init 'neighbor' copies each cell's left (or upper) neighbour, which order {order.name!r} "
                    "does not produce before the cell: use init='random'"
                )
        self.tokens = torch.zeros(batch, h * w, dtype=torch.long, device=device)  # finished tokens and drafts
        self.final = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) steps each image has finished
        self.draft_q: dict[int, Tensor] = {}  # step → (B, T_s, V) the distribution its drafts were drawn from

    def ids(self) -> list[Tensor]:
        """A view of the tokens as the order's one (B, h, w) grid: the order reads it as tokens are written."""
        return [self.tokens.view(*self.shape)]

    def initialise(self, first: int, last: int) -> None:
        """First drafts of steps ``first`` .. ``last``: uniform tokens, or (init "neighbor") copies of the left or
        upper neighbour."""
        if last < first:
            return
        if self.init == "neighbor":  # a copy may read the draft just made for the step before: one step at a time
            for step in range(first, last + 1):
                self._initialise_neighbor(step)
            return
        batch, vocab, device = self.shape[0], self.vocab, self.tokens.device
        where = torch.cat(self.cells[first : last + 1])
        self.tokens[:, where] = torch.randint(vocab, (batch, len(where)), generator=self.generator, device=device)
        uniform = torch.full((batch, 1, vocab), 1.0 / vocab, device=device)
        for step in range(first, last + 1):
            self.draft_q[step] = uniform.expand(batch, self.sizes[step], vocab)

    def _initialise_neighbor(self, step: int) -> None:
        where, batch, vocab = self.cells[step], self.shape[0], self.vocab
        drafts = torch.randint(vocab, (batch, len(where)), generator=self.generator, device=self.tokens.device)
        q = torch.full((batch, len(where), vocab), 1.0 / vocab, device=self.tokens.device)
        copies = self.sources[where] >= 0
        drafts[:, copies] = self.tokens[:, self.sources[where][copies]]
        q[:, copies] = F.one_hot(drafts[:, copies], vocab).float()
        self.tokens[:, where] = drafts
        self.draft_q[step] = q

    def advance(self, order: Order, request: Request, outputs: Tensor, *, done: int, last: int, first: int,
                window: int, offsets: list[int]) -> None:  # fmt: skip
        """Verify steps ``done`` .. ``last`` of one call (their drafts against this call's distributions), finish
        each image's steps up to its first rejection, and redraft every unfinished step (Jacobi iteration)."""
        steps = range(done, last + 1)
        p = self.target_distributions(order, request, outputs, steps=steps, first=first, offsets=offsets)
        batch = self.shape[0]
        sizes = self.sizes[done : last + 1]
        where = self.all_cells[self.starts[done] : self.starts[last + 1]]  # (N,) the call's cells, step by step
        step_of = self.cell_step[self.starts[done] : self.starts[last + 1]] - done  # (N,) their steps, from `done`
        verified = min(last, done + window - 1) - done + 1  # steps with drafts; the rest is the free step
        count = self.starts[done + verified] - self.starts[done]
        drafts = self.tokens[:, where]  # (B, N)
        q = torch.cat([self.draft_q[s] for s in steps[:verified]], dim=1)  # (B, N_w, V)
        sampled, accepted = verify(drafts[:, :count], p[:, :count], q, generator=self.generator)
        # A step is clean when every draft of it was accepted; the free step is never (it has no draft).
        if count == verified:  # one cell per step (raster): a step's rejection is its cell's
            rejected = (~accepted).float()
        else:
            rejected = torch.zeros(batch, verified, device=drafts.device)
            rejected.index_add_(1, step_of[:count], (~accepted).float())
        if verified < len(sizes):
            rejected = torch.cat([rejected, rejected.new_ones(batch, len(sizes) - verified)], dim=1)
        # Each image stops at its first unclean step at or after its own frontier.
        relative_final = (self.final - done)[:, None]  # (B, 1)
        stops = (rejected > 0) & (self.positions[None, : len(sizes)] >= relative_final)
        stop = torch.where(stops.any(dim=1), stops.float().argmax(dim=1), torch.full_like(self.final, len(sizes)))
        self.final = torch.maximum(self.final, stop + done + 1).clamp(max=last + 1)
        at_stop, after_stop = step_of[None] == stop[:, None], step_of[None] > stop[:, None]  # (B, N)
        tokens = torch.where(at_stop[:, :count], sampled, drafts[:, :count])
        if count < len(where):
            tokens = torch.cat([tokens, drafts[:, count:]], dim=1)
        # Draws from p: the free step when an image reaches it, and every step after an image's stop (redrafts).
        from_p = after_stop.clone()
        from_p[:, count:] |= at_stop[:, count:]
        if bool(from_p.any()):
            tokens[from_p] = draw(p[from_p], self.generator)
        self.tokens[:, where] = tokens
        # The redrafted steps' drafts now come from p; q of the free step matters only if it is redrafted.
        q = torch.cat([q, p[:, count:]], dim=1) if count < len(where) else q
        q = torch.where(after_stop[..., None], p, q)
        for s, part in zip(steps, q.split(sizes, dim=1)):
            if s > done:
                self.draft_q[s] = part

    def target_distributions(self, order: Order, request: Request, outputs: Tensor, *, steps: range, first: int,
                             offsets: list[int]) -> Tensor:  # fmt: skip
        """(B, N, V) the final sampling distribution of every target of ``steps``, from one call's (guided) outputs."""
        if type(order).logits is Order.logits:  # position p predicts target p: the steps' outputs, as they are
            fed = outputs[:, offsets[steps[0]] - offsets[first] : offsets[steps[-1] + 1] - offsets[first]]
            logits = order.logits(fed, request.layout, steps[0])
        else:
            logits = torch.cat(
                [order.logits(outputs[:, offsets[s] - offsets[first] : offsets[s + 1] - offsets[first]],
                              request.layout, s) for s in steps], dim=1,
            )  # fmt: skip  # (B, N, V)
        return final_distribution(logits, temperature=request.temperature, top_k=request.top_k, top_p=request.top_p)


@register_sampler(INFO)
@torch.no_grad()
def generate_jacobi(
    model: Model,
    order: Order,
    tokenizer: TokenizerProtocol,
    *,
    use_cache: bool = True,
    callback: Callable[[int, list[Tensor]], None] | None = None,
    window: int | None = None,
    init: str = "random",
    **request: Unpack[RequestOptions],
) -> GenerationOutput:
    """Sample token grids with speculative Jacobi decoding: the distribution of `generate`, in fewer model calls.

    Args (the rest as in `argen.samplers.ar.generate`):
        window: W, the draft steps verified per call (raster: tokens; neighbor: anti-diagonals); a call finishes
            1 to W + 1 steps per image. Default: the order's ``speculative_window`` (16 raster, 4 neighbor).
        init: how new drafts are made: "random" (uniform tokens) or "neighbor" (copy of the left neighbour).
        callback: called as ``callback(step, ids)`` once per step, in order, when every image has finished it.

    Returns:
        `GenerationOutput` with the (B, h, w) grid and ``forward_passes``, the model calls made (at most S).
    """
    INFO.check_supports(order)
    window = order.speculative_window if window is None else window
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ArgenError(f"window must be a whole number of steps, at least 1, got {window!r}")
    if init not in INITS:
        raise ArgenError(f"unknown draft init {init!r}: choose one of {', '.join(INITS)}")
    engine = SamplingEngine.of(model)
    request = prepare_request(engine.model, order, tokenizer, **request)
    layout, num_steps = request.layout, request.layout.num_steps
    state = JacobiState(order, request, vocab=int(engine.model.config.vocab_size), init=init)
    offsets = [0]  # offsets[s]: sequence positions fed before step s
    for fed in layout.inputs_of_step:
        offsets.append(offsets[-1] + len(fed))
    cache = engine.new_cache(request.rows, capacity=layout.length) if use_cache else None
    forward_passes = 0
    done = 0  # steps every image has finished; the cache holds the inputs of exactly these steps
    state.initialise(0, min(window, num_steps) - 1)
    with evaluation(engine.model):
        while done < num_steps:
            # Feed step `done` (its inputs hold finished tokens) and the steps whose inputs hold the drafts of
            # steps done .. done + W - 1; the last fed step is the free one after the window, if the grid has it.
            last = min(done + window, num_steps - 1)
            first = done if use_cache else 0
            outputs = feed(engine, order, tokenizer, request, state.ids(), first=first, last=last, cache=cache)
            forward_passes += 1
            state.advance(order, request, outputs, done=done, last=last, first=first, window=window, offsets=offsets)
            finished = int(state.final.min())
            if cache is not None:
                # Positions of steps < finished were fed accepted tokens only; the rest held rejected drafts.
                cache.rollback(offsets[finished])
            state.initialise(last + 1, min(finished + window, num_steps) - 1)
            for s in range(done, finished):
                state.draft_q.pop(s, None)
                if callback is not None:
                    callback(s, [grid.clone() for grid in state.ids()])
            done = finished
    return GenerationOutput(ids=[grid.clone() for grid in state.ids()], forward_passes=forward_passes)


__all__ = ["INFO", "INITS", "JacobiState", "generate_jacobi"]
