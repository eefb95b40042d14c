"""The Order contract: how id grids become a training sequence, and the inference schedule that rebuilds it.

An order is shaped after a diffusers scheduler: stateless, built once per tokenizer, asked by the trainer for
teacher-forcing tensors and by the sampler, step by step, for the inputs of the next model call. Training and
inference share one schedule, so ``train_inputs(ids)`` restricted to the sequence positions of step s equals
``step_inputs(s, ids)``: the model is trained on exactly the sequences it later sees.

Two index spaces, legend as elsewhere (B batch, L sequence, V vocabulary, S steps, h/w grid):

- sequence positions (L of them): what the transformer is fed. ``Layout.step_of`` gives the step at which each is
  fed; the attention mask is ``block_causal_mask(step_of)`` (VAR's block-causal mask, arXiv 2404.02905 §3.2).
- targets (also L of them in every order here): the token ids the model predicts, in the order's target order;
  ``Layout.target_cells`` says which grid cell each one is, ``Layout.targets_of_step[s]`` which targets step s
  produces. Raster and scale feed position p and predict target p; next-neighbor does not (see neighbor.py), which
  is why an order also turns the model's outputs into target logits (`Order.logits`).

The model never sees a token of step s at a position of a step < s, and nothing is known at step 0: every order's
step-0 inputs are start tokens, which the transformer embeds as its start vector plus the class embedding.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch
from torch import Tensor

from argen.errors import ArgenError
from argen.registry import DEFAULT_RANK, Registry

if TYPE_CHECKING:
    from argen.tokenizers.protocol import TokenizerProtocol


class ModelSettings(Protocol):
    """What an order checks of a transformer's config (`argen.model.TransformerConfig` has these fields)."""

    vocab_size: int
    feature_dim: int
    num_heads_out: int
    max_steps: int
    max_grid: int


def block_causal_mask(step_of: Tensor, key_steps: Tensor | None = None) -> Tensor:
    """(L,) steps → (L, L) bool, True where position p may attend to q: step(q) ≤ step(p).

    ``key_steps`` (K,) gives the steps of other keys (a KV cache's plus the new ones) for an (L, K) mask.
    """
    keys = step_of if key_steps is None else key_steps
    return keys[None, :] <= step_of[:, None]


@dataclass(frozen=True, eq=False)
class Layout:
    """Where every sequence position and every target sits, for one list of grid shapes.

    Attributes (L sequence positions, T = L targets, S steps):
        grid_shapes: the tokenizer's grids.
        step_of: (L,) the step at which each sequence position is fed, nondecreasing.
        positions: (L, 3) (step, row, col) of each sequence position, for the position embeddings.
        sizes: (L, 2) (h, w) of the grid that ``positions``' row and col index, so that the transformer can put
            grids of different sizes on one table.
        target_cells: (T, 3) (grid, row, col) of each target.
        targets_of_step: S tensors, the targets produced at each step (indices into the target order).
        inputs_of_step: S tensors, the sequence positions fed at each step (contiguous, in order).
    """

    grid_shapes: tuple[tuple[int, int], ...]
    step_of: Tensor
    positions: Tensor
    sizes: Tensor
    target_cells: Tensor
    targets_of_step: list[Tensor]
    inputs_of_step: list[Tensor]
    # Index of each target in the concatenation of the flattened grids (derived, for gather and scatter).
    target_flat: Tensor = field(init=False)
    # input_starts[s]: sequence positions fed before step s (derived; S + 1 ints).
    input_starts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        offsets = [0]
        for h, w in self.grid_shapes:
            offsets.append(offsets[-1] + h * w)
        grid, row, col = self.target_cells.unbind(1)
        widths = torch.tensor([w for _, w in self.grid_shapes], dtype=torch.long)
        flat = torch.tensor(offsets[:-1], dtype=torch.long)[grid] + row * widths[grid] + col
        object.__setattr__(self, "target_flat", flat)
        starts = [0]
        for fed in self.inputs_of_step:
            starts.append(starts[-1] + len(fed))
        object.__setattr__(self, "input_starts", starts)

    def inputs_of_steps(self, first: int, last: int) -> Tensor:
        """The sequence positions fed at steps ``first`` .. ``last`` (contiguous: one arange, no concatenation)."""
        return torch.arange(self.input_starts[first], self.input_starts[last + 1])

    @property
    def num_steps(self) -> int:
        return len(self.targets_of_step)

    @property
    def positions_of_step(self) -> list[Tensor]:
        """The old name of ``targets_of_step`` (they are target indices, not sequence positions)."""
        return self.targets_of_step

    @property
    def length(self) -> int:
        return int(self.step_of.numel())

    @property
    def max_grid(self) -> int:
        return max(max(h, w) for h, w in self.grid_shapes)

    def mask(self) -> Tensor:
        """(L, L) bool block-causal attention mask of the whole sequence."""
        return block_causal_mask(self.step_of)


def check_ids(ids: list[Tensor], grid_shapes: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> None:
    """ArgenError unless ``ids`` is one (B, h, w) integer grid per shape in ``grid_shapes``."""
    shapes = [tuple(shape) for shape in grid_shapes]
    if len(ids) != len(shapes):
        raise ArgenError(f"got {len(ids)} id grids but the tokenizer has {len(shapes)}: encode with the same tokenizer")
    for grid, shape in zip(ids, shapes):
        if grid.dim() != 3 or tuple(grid.shape[1:]) != shape or grid.dtype != torch.long:
            raise ArgenError(
                f"id grid of shape {tuple(grid.shape)} ({grid.dtype}) does not fit the tokenizer's grid {shape}: "
                "pass the LongTensor grids its encode() returns"
            )


def tokenizer_kind(tokenizer: TokenizerProtocol) -> str:
    return str(tokenizer.config.kind)


class Order:
    """One generation order (one paper). Subclasses set the class attributes and the four order-specific methods,
    and register with ``@register_order``.

    Class attributes, the order's metadata (CLI help, `argen demo`, `argen bench` and the samplers read them):
        name: registry name (``--order NAME``).
        method, paper, arxiv: what it is and where it comes from, e.g. "next-scale", "VAR", "2404.02905".
        default_tokenizer: the tokenizer kind `argen bench` trains for it.
        tokenizer_kinds: the tokenizer kinds (``tokenizer.config.kind``) this order can work with.
        rank: its place in listings (lower first).
    Capabilities (what a sampler may require, see `argen.samplers.base.SamplerInfo.needs`):
        single_grid: True if the order needs a one-grid tokenizer (each step writes cells of that one grid).
        coarse_to_fine: True if each step produces a whole grid, coarsest first (next-scale, next-frequency).
        input_kind: "ids" (inputs are (B, L) ids, start id = codebook_size) or "features" ((B, L, F) vectors).
        num_heads_out: output heads the transformer needs (2 for NAR's dimension-oriented heads).
        speculative_window: the steps a speculative sampler drafts per call by default (SJD's window).
    """

    name: ClassVar[str] = ""
    method: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    arxiv: ClassVar[str] = ""
    default_tokenizer: ClassVar[str] = ""
    tokenizer_kinds: ClassVar[tuple[str, ...]] = ()
    rank: ClassVar[int] = DEFAULT_RANK
    single_grid: ClassVar[bool] = False
    coarse_to_fine: ClassVar[bool] = False
    input_kind: ClassVar[str] = "ids"
    num_heads_out: ClassVar[int] = 1
    speculative_window: ClassVar[int] = 16

    @classmethod
    def summary(cls) -> str:
        """One line for listings: "next-scale (VAR, arXiv 2404.02905)"."""
        return f"{cls.method} ({cls.paper}, arXiv {cls.arxiv})"

    def __init__(self) -> None:
        self._layouts: dict[tuple[tuple[int, int], ...], Layout] = {}

    # -- order-specific ---------------------------------------------------------------------------------------------

    def _build_layout(self, grid_shapes: tuple[tuple[int, int], ...]) -> Layout:
        raise NotImplementedError

    def train_inputs(self, ids: list[Tensor], tokenizer: TokenizerProtocol) -> tuple[Tensor, Tensor]:
        """Teacher forcing: ids → (inputs (B, L) or (B, L, F), targets (B, L)) for the whole sequence."""
        raise NotImplementedError

    def step_inputs(self, step: int, ids: list[Tensor], tokenizer: TokenizerProtocol) -> Tensor:
        """Inputs of the sequence positions fed at ``step``, (B, L_s) or (B, L_s, F), from the ids of steps < step.

        Grid cells of steps ≥ ``step`` are never read, so ``ids`` may hold anything there.
        """
        raise NotImplementedError

    def preview(self, ids: list[Tensor], step: int, tokenizer: TokenizerProtocol) -> Tensor:
        """Images (B, C, H, W) decoded from what the first ``step`` steps produced (0: nothing, S: everything)."""
        raise NotImplementedError

    def span_inputs(self, first: int, last: int, ids: list[Tensor], tokenizer: TokenizerProtocol) -> Tensor:
        """The inputs of steps ``first`` .. ``last`` in one tensor, (B, L', ...): ``step_inputs`` concatenated (an
        order may build them at once, as raster slices its shifted ids)."""
        inputs = [self.step_inputs(step, ids, tokenizer) for step in range(first, last + 1)]
        return inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1)

    def decoding_inputs(self, tokenizer: TokenizerProtocol) -> StepInputs:
        """A fresh `StepInputs` for one generation: what the samplers call instead of `step_inputs` (an order may
        keep state across the steps of one generation there, as coarse-to-fine orders keep the running latent)."""
        return StepInputs(self, tokenizer)

    def logits(self, outputs: Tensor, layout: Layout, step: int | None = None) -> Tensor:
        """Model outputs → logits of the targets.

        ``outputs`` is (B, L, V) (or (B, L, num_heads_out, V)) for the whole sequence when ``step`` is None, giving
        (B, L, V) aligned with the targets; with ``step`` it covers the positions fed at that step, giving
        (B, T_s, V) for ``targets_of_step[step]``. Raster and scale predict target p at position p, so this is
        the identity there.
        """
        return outputs.squeeze(2) if outputs.dim() == 4 else outputs

    # -- shared -----------------------------------------------------------------------------------------------------

    def layout(self, grid_shapes: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> Layout:
        """The layout for these grids (computed once per grid list, then cached)."""
        key = tuple((int(h), int(w)) for h, w in grid_shapes)
        if key not in self._layouts:
            # Ordinary tensors even when first asked for under inference mode (a pipeline call): training may
            # index with them later, and inference tensors cannot be saved for backward.
            with torch.inference_mode(False):
                self._layouts[key] = self._build_layout(key)
        return self._layouts[key]

    def check_tokenizer(self, tokenizer: TokenizerProtocol) -> None:
        """ArgenError, naming the tokenizer kind needed, unless this order can work with ``tokenizer``."""
        kind = tokenizer_kind(tokenizer)
        needed = " or ".join(self.tokenizer_kinds)
        if kind not in self.tokenizer_kinds:
            raise ArgenError(
                f"order {self.name!r} needs a {needed} tokenizer, got a {kind!r} one: "
                f"train a {needed} tokenizer or pick an order that fits {kind!r}"
            )
        if self.single_grid and len(tokenizer.grid_shapes) != 1:
            raise ArgenError(
                f"order {self.name!r} needs a single-grid tokenizer, got {len(tokenizer.grid_shapes)} grids"
            )

    def start_tokens(self, grid: Tensor, tokenizer: TokenizerProtocol) -> Tensor:
        """(B, 1) start-token ids (id ``codebook_size``) for a batch like ``grid``: what every id order feeds first."""
        return grid.new_full((grid.shape[0], 1), int(tokenizer.codebook_size))

    def shifted_train_inputs(self, ids: list[Tensor], tokenizer: TokenizerProtocol) -> tuple[Tensor, Tensor]:
        """Teacher forcing for orders that feed target p's id at position p + 1 (raster, neighbor): the targets
        shifted right behind a start token, and the targets, both (B, L)."""
        check_ids(ids, tokenizer.grid_shapes)
        targets = self.targets(ids)  # (B, L)
        return torch.cat([self.start_tokens(targets, tokenizer), targets[:, :-1]], dim=1), targets

    def targets(self, ids: list[Tensor]) -> Tensor:
        """ids → (B, L) targets in this order's target order."""
        layout = self.layout([tuple(grid.shape[1:]) for grid in ids])
        check_ids(ids, layout.grid_shapes)
        flat = torch.cat([grid.flatten(1) for grid in ids], dim=1)
        return flat[:, layout.target_flat.to(flat.device)]

    def scatter(self, ids: list[Tensor], step: int, sampled: Tensor) -> list[Tensor]:
        """New grids: ``ids`` with ``sampled`` (B, T_s), ordered as ``targets_of_step[step]``, written in."""
        layout = self.layout([tuple(grid.shape[1:]) for grid in ids])
        flat = torch.cat([grid.flatten(1) for grid in ids], dim=1)
        where = layout.target_flat[layout.targets_of_step[step]].to(flat.device)
        flat[:, where] = sampled.to(flat.dtype)
        sizes = [h * w for h, w in layout.grid_shapes]
        return [part.reshape(-1, h, w) for part, (h, w) in zip(flat.split(sizes, dim=1), layout.grid_shapes)]

    def feature_dim(self, tokenizer: TokenizerProtocol) -> int:
        """F of feature inputs (the tokenizer's latent channels), 0 for orders that feed ids."""
        if self.input_kind != "features":
            return 0
        # Every generation checks the model against the order: the probe below runs once per tokenizer.
        cache = self.__dict__.setdefault("_feature_dims", {})
        known = cache.get(id(tokenizer))
        if known is not None and known[0]() is tokenizer:
            return known[1]
        device = next(iter([*tokenizer.parameters(), *tokenizer.buffers()]), torch.zeros(0)).device
        ids = [torch.zeros(1, h, w, dtype=torch.long, device=device) for h, w in tokenizer.grid_shapes]
        with torch.no_grad():
            dim = int(tokenizer.compose(ids, 0).shape[1])
        try:
            cache[id(tokenizer)] = (weakref.ref(tokenizer), dim)
        except TypeError:  # an object that takes no weak references is probed every time
            pass
        return dim

    def model_settings(self, tokenizer: TokenizerProtocol) -> dict[str, int]:
        """The `TransformerConfig` fields this order and tokenizer dictate, to pass as keyword arguments."""
        layout = self.layout(tokenizer.grid_shapes)
        return {
            "vocab_size": int(tokenizer.codebook_size),
            "feature_dim": self.feature_dim(tokenizer),
            "num_heads_out": self.num_heads_out,
            "max_steps": layout.num_steps,
            "max_grid": layout.max_grid,
        }

    def check_model(self, config: ModelSettings, tokenizer: TokenizerProtocol) -> None:
        """ArgenError if a transformer with ``config`` cannot run this order on ``tokenizer``."""
        settings = self.model_settings(tokenizer)
        problems = []
        for key in ("vocab_size", "feature_dim", "num_heads_out"):
            if getattr(config, key) != settings[key]:
                problems.append(f"{key}={getattr(config, key)} (needs {settings[key]})")
        for key in ("max_steps", "max_grid"):
            if getattr(config, key) < settings[key]:
                problems.append(f"{key}={getattr(config, key)} (needs at least {settings[key]})")
        if problems:
            raise ArgenError(
                f"the transformer does not fit order {self.name!r} on this tokenizer: {', '.join(problems)}; "
                "build its config with order.model_settings(tokenizer)"
            )

    def _masked_preview(self, ids: list[Tensor], step: int, tokenizer: TokenizerProtocol) -> Tensor:
        """Single-grid preview: the latent of the whole grid with the code vectors of later steps zeroed."""
        layout = self.layout(tokenizer.grid_shapes)
        (h, w), batch = layout.grid_shapes[0], ids[0].shape[0]
        known = torch.zeros(h * w, dtype=torch.bool)
        if step > 0:
            done = torch.cat(layout.targets_of_step[:step])
            known[layout.target_flat[done]] = True
        latent = tokenizer.compose(ids, len(ids))
        keep = known.view(1, 1, h, w).to(device=latent.device, dtype=latent.dtype)
        if tuple(latent.shape[-2:]) != (h, w):
            raise ArgenError(f"latent {tuple(latent.shape[-2:])} is not on the {h}×{w} grid: cannot mask it per token")
        return tokenizer.decode_latent(latent * keep.expand(batch, 1, h, w))


class StepInputs:
    """The inputs of each inference step during one generation, ``inputs(step, ids)`` = ``order.step_inputs(step,
    ids, tokenizer)``. Made by `Order.decoding_inputs` per generation; it may assume that the grid cells of steps < s
    are final once step s has been fed (true of every sampler that feeds it), which lets it keep work across steps.
    """

    def __init__(self, order: Order, tokenizer: TokenizerProtocol) -> None:
        self.order, self.tokenizer = order, tokenizer

    def __call__(self, step: int, ids: list[Tensor]) -> Tensor:
        return self.order.step_inputs(step, ids, self.tokenizer)

    def span(self, first: int, last: int, ids: list[Tensor]) -> Tensor:
        """The inputs of steps ``first`` .. ``last`` concatenated, (B, L', ...)."""
        return self.order.span_inputs(first, last, ids, self.tokenizer)

    def final_latent(self, ids: list[Tensor]) -> Tensor | None:
        """``tokenizer.compose(ids, S)`` when this object already has most of it (then decoding needs no
        recomposition), else None."""
        return None


ORDERS: Registry[type[Order]] = Registry("order", "argen.orders")


def register_order(order: type[Order]) -> type[Order]:
    """Class decorator: make ``order`` available as ``--order order.name`` everywhere."""
    if not order.default_tokenizer or order.default_tokenizer not in order.tokenizer_kinds:
        raise ValueError(f"order {order.name!r}: default_tokenizer must be one of its tokenizer_kinds")
    return ORDERS.add(order.name, order, rank=order.rank)


def single_grid_cells(h: int, w: int, order: list[tuple[int, int]]) -> Tensor:
    """(T, 3) target cells (grid 0, row, col) for cells listed in ``order``."""
    return torch.tensor([(0, r, c) for r, c in order], dtype=torch.long).view(-1, 3)
