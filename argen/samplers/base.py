"""What every sampler shares: its registry entry, the request it checks, and one step of decoding.

A sampler is a function ``generate(model, order, tokenizer, *, callback, **its_options, **request) ->
GenerationOutput`` (``model``: a `argen.model.Transformer` or the `argen.samplers.engine.SamplingEngine` that runs
it; ``request``: the keywords `prepare_request` checks, shared by all, `RequestOptions`) registered with
``@register_sampler(SamplerInfo(...))``: the info says what it needs of an order (capabilities, never names) and
which options it takes, which is all the CLI (flags, ``sampler_options``), `argen.Pipeline` (required options,
model options) and `argen eval` need to offer it. `SAMPLERS` discovers every module of this folder, so a new
sampler is one new file.

Legend: B batch, L sequence, V vocabulary, S steps, T_s targets of step s; "rows" are B, or 2B under
classifier-free guidance (conditional then null class).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

import torch
from torch import Tensor

from argen.errors import ArgenError
from argen.model import KVCache, Transformer
from argen.orders import ORDERS, Layout, Order
from argen.orders.base import StepInputs
from argen.registry import DEFAULT_RANK, Registry, listing
from argen.samplers.engine import SamplingEngine
from argen.samplers.logits import CFG_SCHEDULES, cfg_scale_at, check_sampling, sample

if TYPE_CHECKING:
    from argen.tokenizers.protocol import TokenizerProtocol

# What a sampler runs: a bare transformer (it gets a one-generation engine) or an engine kept across generations.
Model = Transformer | SamplingEngine


class RequestOptions(TypedDict, total=False):
    """The keywords every sampler takes (``**request``), checked by `prepare_request`."""

    labels: Tensor | None
    batch_size: int | None
    cfg_scale: float
    cfg_schedule: str
    temperature: float
    top_k: int
    top_p: float
    generator: torch.Generator | None


@dataclass
class GenerationOutput:
    """ids: one (B, h, w) grid per tokenizer grid; forward_passes: model calls made for the batch; passes_by_model:
    for samplers that call several models (collaborative decoding), those calls per model, e.g. ``{"drafter": 3,
    "refiner": 3}``, else None."""

    ids: list[Tensor]
    forward_passes: int
    passes_by_model: dict[str, int] | None = None
    # tokenizer.compose(ids, S) (B, F, h, w) when the sampler kept the running latent: decode_latent(latent) is
    # decode(ids) without recomposing every grid.
    latent: Tensor | None = None


@dataclass(frozen=True)
class SamplerOption:
    """One keyword a sampler takes beyond the shared ones, offered on the command line as ``--keyword-with-dashes``.

    ``model``: the value names another model directory (or an `argen.Pipeline`); the pipeline loads it, checks it
    shares the order and tokenizer, and passes its transformer in.
    """

    keyword: str
    type: Callable[[str], object] = str
    metavar: str | None = None
    help: str = ""
    required: bool = False
    model: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.keyword.replace("_", "-")


@dataclass(frozen=True)
class SamplerInfo:
    """A sampler's metadata. ``needs``: order capabilities (attributes of `argen.orders.Order`) and the value each
    must have, e.g. ``{"single_grid": True}``; an order supports the sampler iff it has them all."""

    name: str
    method: str  # what it is, in a few words ("speculative Jacobi decoding")
    help: str  # the rest of its line in `--sampler` help ("the same distribution in fewer passes")
    paper: str = ""
    arxiv: str = ""
    needs: dict[str, object] = field(default_factory=dict)
    options: tuple[SamplerOption, ...] = ()
    rank: int = DEFAULT_RANK

    def supports(self, order: Order | type[Order]) -> bool:
        return all(getattr(order, key, None) == value for key, value in self.needs.items())

    def supported_orders(self) -> list[str]:
        """The registered orders this sampler works with."""
        return [name for name, order in ORDERS.items() if self.supports(order)]

    def check_supports(self, order: Order) -> None:
        """ArgenError, naming the orders that fit, unless ``order`` has the capabilities this sampler needs."""
        if not self.supports(order):
            fits = self.supported_orders()
            raise ArgenError(
                f"{self.method} works with the {listing(fits) if fits else 'no registered'} order"
                f"{'s' if len(fits) != 1 else ''}, not {order.name!r}: use the 'ar' sampler for it"
            )


SAMPLERS: Registry[Callable[..., GenerationOutput]] = Registry("sampler", "argen.samplers")


def register_sampler(info: SamplerInfo) -> Callable[[Callable[..., GenerationOutput]], Callable[..., GenerationOutput]]:
    """Function decorator: make the sampler available as ``sampler=info.name`` and ``--sampler NAME`` everywhere."""

    def register(generate: Callable[..., GenerationOutput]) -> Callable[..., GenerationOutput]:
        return SAMPLERS.add(info.name, generate, rank=info.rank, info=info)

    return register


def prepare_labels(
    model: Transformer,
    labels: Tensor | None,
    *,
    batch_size: int | None,
    cfg_scale: float,
    cfg_schedule: str,
    device: torch.device,
) -> tuple[Tensor | None, int, bool]:
    """Check the labels and guidance and return (labels, B, guided).

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


@dataclass
class Request:
    """One checked generation request: the order's layout, the (possibly doubled) labels, guidance and sampling."""

    layout: Layout
    device: torch.device
    labels: Tensor | None  # (rows,)
    batch_size: int
    guided: bool
    cfg_scale: float
    cfg_schedule: str
    temperature: float
    top_k: int
    top_p: float
    generator: torch.Generator | None
    # The step inputs of this generation (`argen.orders.base.StepInputs`; coarse-to-fine orders keep the running
    # latent there). A sampler that changes grids of finished steps (particle resampling) sets a plain one.
    inputs: StepInputs | None = None

    @property
    def rows(self) -> int:
        return 2 * self.batch_size if self.guided else self.batch_size

    def empty_ids(self) -> list[Tensor]:
        """Zero grids, one (B, h, w) per tokenizer grid, for the sampler to fill step by step."""
        return [
            torch.zeros(self.batch_size, h, w, dtype=torch.long, device=self.device) for h, w in self.layout.grid_shapes
        ]


def prepare_request(
    model: Transformer,
    order: Order,
    tokenizer: TokenizerProtocol,
    *,
    labels: Tensor | None = None,
    batch_size: int | None = None,
    cfg_scale: float = 1.0,
    cfg_schedule: str = "constant",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Request:
    """Check what every sampler is asked, the keywords they all take (a sampler passes its ``**request`` here).

    Args:
        model: a `argen.model.Transformer`, checked against ``order`` and ``tokenizer``.
        labels: (B,) classes, or None for unconditional sampling (then ``batch_size`` gives B).
        cfg_scale: guidance scale s (logits = uncond + s · (cond - uncond)); 1 is unguided.
        cfg_schedule: "constant", or "linear" for VAR's ramp from 1 at the first step to cfg_scale at the last.
        temperature, top_k, top_p, generator: see `argen.samplers.logits.sample`; temperature 0 is greedy.
    """
    check_sampling(temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule)
    layout = order.layout(tokenizer.grid_shapes)
    order.check_model(model.config, tokenizer)
    device = next(model.parameters()).device
    labels, batch_size, guided = prepare_labels(
        model, labels, batch_size=batch_size, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, device=device
    )
    return Request(
        layout=layout, device=device, labels=labels, batch_size=batch_size, guided=guided, cfg_scale=cfg_scale,
        cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
        inputs=order.decoding_inputs(tokenizer),
    )  # fmt: skip


@contextmanager
def evaluation(*models: torch.nn.Module) -> Iterator[None]:
    """The models in eval mode (class dropout and dropout are for training only), their modes restored after."""
    # Only models in training mode are switched (and back): model.eval() walks every submodule, which costs more than
    # a whole step of a small model at batch 1.
    training = [model for model in models if model.training]
    for model in training:
        model.eval()
    try:
        yield
    finally:
        for model in training:
            model.train(True)


def feed(
    engine: SamplingEngine,
    order: Order,
    tokenizer: TokenizerProtocol,
    request: Request,
    ids: list[Tensor],
    *,
    first: int,
    last: int,
    cache: KVCache | None,
) -> Tensor:
    """One model call on the inputs of steps ``first`` .. ``last`` (built from ``ids``): outputs (B, L', ...), guided
    at each fed position's step scale when the request is (the engine guides before the output layers)."""
    if request.inputs is None:
        request.inputs = StepInputs(order, tokenizer)
    inputs = request.inputs.span(first, last, ids)
    index = request.layout.inputs_of_steps(first, last)
    guided = {}
    if request.guided:
        inputs = torch.cat([inputs, inputs])
        guided["guidance"] = guidance_scales(request, first, last, index)
    # Float32 logits under bf16 autocast: the sampling distributions are computed in full precision.
    return engine(inputs, request.labels, layout=request.layout, index=index, cache=cache, **guided).float()


def guidance_scales(request: Request, first: int, last: int, index: Tensor) -> float | Tensor:
    """The guidance scale of each fed position of steps ``first`` .. ``last``: one float when they share it (a
    constant schedule, or one step), else (L',) per position (`argen.samplers.logits.cfg_scale_at` of its step)."""
    num_steps = request.layout.num_steps
    scales = [
        cfg_scale_at(step, num_steps, cfg_scale=request.cfg_scale, schedule=request.cfg_schedule)
        for step in range(first, last + 1)
    ]
    if len(set(scales)) == 1:
        return scales[0]
    per_step = torch.tensor(scales)
    return per_step[request.layout.step_of[index] - first]


def step_logits(order: Order, request: Request, outputs: Tensor, step: int) -> Tensor:
    """The (guided) outputs of ``step``'s positions from `feed` → its targets' logits (B, T_s, V)."""
    return order.logits(outputs, request.layout, step)


def decode_step(
    engine: SamplingEngine,
    order: Order,
    tokenizer: TokenizerProtocol,
    request: Request,
    ids: list[Tensor],
    step: int,
    *,
    first: int,
    cache: KVCache | None,
) -> list[Tensor]:
    """Plain decoding of one step: feed steps ``first`` .. ``step``, sample the step's targets, scatter them in."""
    outputs = feed(engine, order, tokenizer, request, ids, first=first, last=step, cache=cache)
    outputs = outputs[:, -len(request.layout.inputs_of_step[step]) :]  # this step's positions
    logits = step_logits(order, request, outputs, step)
    sampled = sample(
        logits, temperature=request.temperature, top_k=request.top_k, top_p=request.top_p, generator=request.generator
    )
    return order.scatter(ids, step, sampled)


__all__ = [
    "SAMPLERS",
    "GenerationOutput",
    "Model",
    "Request",
    "RequestOptions",
    "SamplerInfo",
    "SamplerOption",
    "decode_step",
    "evaluation",
    "feed",
    "guidance_scales",
    "prepare_labels",
    "prepare_request",
    "register_sampler",
    "step_logits",
]
