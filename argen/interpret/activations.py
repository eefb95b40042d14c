"""Activations of a generator at named hook points: names, capture to sharded safetensors, splicing and steering.

Hook names (TransformerLens's, per block ``i`` of ``blocks`` and of ``head_blocks``, NAR's extra heads):

====================  ==========================  ======================================================
name                  module (forward hook)       tensor
====================  ==========================  ======================================================
blocks.{i}.resid_pre  ``blocks.{i}``, its input   (B, L, D) the residual stream entering block i
blocks.{i}.resid_post ``blocks.{i}``, its output  (B, L, D) the residual stream leaving block i
blocks.{i}.attn.z     ``blocks.{i}.attention.z``  (B, L, H, Dh) per-head outputs before the projection
blocks.{i}.mlp_out    ``blocks.{i}.mlp_out``      (B, L, D) the MLP's output before the residual add
====================  ==========================  ======================================================

A name is listed (`hook_points`, ``argen activations --list-hooks``) only when the model has the module and the
module computes something (``attention.z`` and ``mlp_out`` are ``nn.Identity`` hook points of `argen.model.layers`).
While a hook is registered on a block the transformer runs its blocks as modules (`Transformer.blocks_hooked`), so
the hooks fire in plain forward passes and in sampling alike, with the same floats as the fused path.

Capture is teacher-forced: the order's ``train_inputs`` of training ids or of sampled ids (the block-causal mask
makes a full forward pass compute what sampling computed step by step). Every position is recorded with its
sequence, class, step and grid cell (from the order's `Layout`), so reading is the same for any order. Shards hold
whole sequences; a capture stopped midway resumes at the first missing shard.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from argen.checkpoint import atomic_write, atomic_write_text
from argen.errors import ArgenError
from argen.orders.base import Order

MANIFEST_NAME = "manifest.json"
SEQUENCES_NAME = "sequences.safetensors"
ACTIVATIONS_FORMAT = "argen-activations-1"
# suffix → (sub-module of the block, "input" or "output" of it)
HOOK_SITES = {
    "resid_pre": ("", "input"),
    "resid_post": ("", "output"),
    "attn.z": ("attention.z", "output"),
    "mlp_out": ("mlp_out", "output"),
}


@dataclass(frozen=True)
class HookPoint:
    name: str
    module: str  # path of the module in the model
    site: str  # "input" or "output"


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Every hook name this model offers → where it sits."""
    points = {}
    for prefix in ("blocks", "head_blocks"):
        for index, _ in enumerate(getattr(model, prefix, [])):
            for suffix, (path, site) in HOOK_SITES.items():
                module_path = f"{prefix}.{index}" + (f".{path}" if path else "")
                try:
                    module = model.get_submodule(module_path)
                except AttributeError:
                    continue
                if type(module).forward is nn.Module.forward:  # a parameter holder: nothing calls it
                    continue
                name = f"{prefix}.{index}.{suffix}"
                points[name] = HookPoint(name, module_path, site)
    return points


def resolve_hook(model: nn.Module, name: str) -> HookPoint:
    points = hook_points(model)
    if name not in points:
        shown = ", ".join(list(points)[:8])
        raise ArgenError(f"no hook point {name!r} in this model; it has {shown} (list them with --list-hooks)")
    return points[name]


def _as_tensor(value: Tensor | tuple) -> Tensor:
    return value[0] if isinstance(value, tuple) else value


@contextlib.contextmanager
def editing(model: nn.Module, name: str, edit: Callable[[Tensor], Tensor | None]) -> Iterator[None]:
    """Call ``edit(activation)`` at hook ``name`` in every forward pass inside the context; a tensor it returns
    replaces the activation (splicing an SAE's reconstruction, steering), None leaves it (recording)."""
    point = resolve_hook(model, name)
    module = model.get_submodule(point.module)
    if point.site == "input":

        def before(_: nn.Module, arguments: tuple) -> tuple | None:
            replaced = edit(arguments[0])
            return None if replaced is None else (replaced, *arguments[1:])

        handle = module.register_forward_pre_hook(before)
    else:

        def after(_: nn.Module, arguments: tuple, output: Tensor) -> Tensor | None:
            return edit(_as_tensor(output))

        handle = module.register_forward_hook(after)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def recording(model: nn.Module, names: list[str]) -> Iterator[dict[str, Tensor]]:
    """A dict that holds, after each forward pass inside the context, the detached activation of every hook in
    ``names``: (B, L, D), or (B, L, H, Dh) for ``attn.z``."""
    recorded: dict[str, Tensor] = {}
    with contextlib.ExitStack() as stack:
        for name in names:

            def keep(activation: Tensor, name: str = name) -> None:
                recorded[name] = activation.detach()

            stack.enter_context(editing(model, name, keep))
        yield recorded


def steering(model: nn.Module, name: str, direction: Tensor, delta: float) -> contextlib.AbstractContextManager:
    """Add ``delta`` × ``direction`` (D,) at hook ``name`` at every position (``argen sample --steer``); delta 0
    leaves every float as it was."""

    def add(activation: Tensor) -> Tensor | None:
        if delta == 0:
            return None
        return activation + delta * direction.to(activation).view(*([1] * (activation.dim() - 1)), -1)

    return editing(model, name, add)


# ---------------------------------------------------------------------------------------------------------------
# Capture to disk


def position_table(order: Order, grid_shapes: tuple[tuple[int, int], ...]) -> dict[str, Tensor]:
    """What every sequence position of the order's layout is, (L,) each: step, row, col and the (h, w) of its grid."""
    layout = order.layout(grid_shapes)
    return {
        "step": layout.step_of.clone(),
        "row": layout.positions[:, 1].clone(),
        "col": layout.positions[:, 2].clone(),
        "grid_height": layout.sizes[:, 0].clone(),
        "grid_width": layout.sizes[:, 1].clone(),
    }


@torch.no_grad()
def capture_activations(
    model: nn.Module,
    order: Order,
    tokenizer: nn.Module,
    ids: list[Tensor],
    labels: Tensor | None,
    hooks: list[str],
    out: str | Path,
    *,
    batch_size: int = 64,
    shard_bytes: int = 64 << 20,
    source: dict | None = None,
    progress: bool = True,
) -> Path:
    """Record ``hooks`` for the N sequences of ``ids`` (one (N, h, w) grid per tokenizer grid), teacher-forced,
    into ``out``: ``manifest.json``, ``sequences.safetensors`` (ids, labels, targets, the position table) and
    ``shard-K.safetensors`` files of whole sequences, one (n, L, ...) tensor per hook, each under ``shard_bytes``.
    An existing complete shard is kept (resume)."""
    out = Path(out)
    for name in hooks:
        resolve_hook(model, name)
    model.eval()
    count = ids[0].shape[0]
    layout = order.layout(tokenizer.grid_shapes)
    probe_inputs, _ = order.train_inputs([grid[:1] for grid in ids], tokenizer)
    with recording(model, hooks) as recorded:
        model(probe_inputs, None if labels is None else labels[:1], layout=layout)
    shapes = {name: list(recorded[name].shape[2:]) for name in hooks}
    per_sequence = sum(layout.length * recorded[name][0, 0].numel() * 4 for name in hooks)
    per_shard = max(1, min(count, shard_bytes // per_sequence))
    batch_size = max(1, min(batch_size, per_shard))
    shards = [(start, min(start + per_shard, count)) for start in range(0, count, per_shard)]
    manifest = {
        "format": ACTIVATIONS_FORMAT, "hooks": shapes, "sequences": count, "length": layout.length,
        "order": order.name, "grid_shapes": [list(shape) for shape in tokenizer.grid_shapes],
        "shards": [[start, stop] for start, stop in shards], "source": source or {},
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    _write_sequences(out, order, tokenizer, ids, labels)
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
    bar = tqdm(total=count, desc="activations", unit="seq", disable=not progress)
    for index, (start, stop) in enumerate(shards):
        path = out / f"shard-{index:05d}.safetensors"
        if not path.exists():
            parts: dict[str, list[Tensor]] = {name: [] for name in hooks}
            for first in range(start, stop, batch_size):
                last = min(first + batch_size, stop)
                inputs, _ = order.train_inputs([grid[first:last] for grid in ids], tokenizer)
                with recording(model, hooks) as recorded:
                    model(inputs, None if labels is None else labels[first:last], layout=layout)
                for name in hooks:
                    parts[name].append(recorded[name].float().cpu())
            tensors = {name: torch.cat(parts[name]).contiguous() for name in hooks}
            atomic_write(path, lambda temporary, tensors=tensors: save_file(tensors, str(temporary)))
        bar.update(stop - start)
    bar.close()
    return out


def _write_sequences(out: Path, order: Order, tokenizer: nn.Module, ids: list[Tensor], labels: Tensor | None) -> None:
    _, targets = order.train_inputs(ids, tokenizer)
    tensors = {f"ids_{index}": grid.cpu().contiguous() for index, grid in enumerate(ids)}
    tensors["targets"] = targets.cpu().contiguous()
    if labels is not None:
        tensors["labels"] = labels.cpu().long().contiguous()
    tensors.update({f"position_{key}": value for key, value in position_table(order, tokenizer.grid_shapes).items()})
    atomic_write(out / SEQUENCES_NAME, lambda temporary: save_file(tensors, str(temporary)))


class Activations:
    """A capture directory, read the same way for any order.

    ``load(hook)`` gives (N·L, D) rows, sequence-major (row r is sequence r // L, position r % L); ``positions()``
    the matching (N·L,) metadata: sequence, position, label (-1 without), step, row, col, grid height and width,
    token (the target id of that position).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        path = self.directory / MANIFEST_NAME
        if not path.is_file():
            raise ArgenError(f"{directory} is not an activations directory (no {MANIFEST_NAME}); make one with "
                             "`argen activations`")  # fmt: skip
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != ACTIVATIONS_FORMAT:
            raise ArgenError(f"{path} is not in format {ACTIVATIONS_FORMAT}; capture the activations again")
        self.length = int(self.manifest["length"])
        self.sequences = int(self.manifest["sequences"])

    @property
    def hooks(self) -> dict[str, list[int]]:
        return self.manifest["hooks"]

    def sequence_tensors(self) -> dict[str, Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.directory / SEQUENCES_NAME))

    def ids(self) -> list[Tensor]:
        tensors = self.sequence_tensors()
        return [tensors[f"ids_{index}"] for index in range(len(self.manifest["grid_shapes"]))]

    def load(self, hook: str, *, max_sequences: int | None = None, flatten_heads: bool = True) -> Tensor:
        """(N·L, D) activations of ``hook`` (per-head (H, Dh) flattened to H·Dh unless ``flatten_heads`` is False)."""
        if hook not in self.hooks:
            raise ArgenError(f"{self.directory} has no hook {hook!r}; it holds {', '.join(self.hooks)}")
        limit = self.sequences if max_sequences is None else min(max_sequences, self.sequences)
        parts = []
        for index, (start, _) in enumerate(self.manifest["shards"]):
            if start >= limit:
                break
            path = self.directory / f"shard-{index:05d}.safetensors"
            if not path.is_file():
                raise ArgenError(f"{path} is missing: the capture did not finish; rerun `argen activations` to resume")
            with safe_open(str(path), framework="pt") as stream:
                parts.append(stream.get_tensor(hook)[: limit - start])
        values = torch.cat(parts)  # (N, L, ...)
        return values.flatten(0, 1).flatten(1) if flatten_heads else values.flatten(0, 1)

    def positions(self, *, max_sequences: int | None = None) -> dict[str, Tensor]:
        """(N·L,) metadata of the rows of `load` (see the class docstring)."""
        tensors = self.sequence_tensors()
        count = self.sequences if max_sequences is None else min(max_sequences, self.sequences)
        length = self.length
        sequence = torch.arange(count).repeat_interleave(length)
        position = torch.arange(length).repeat(count)
        labels = tensors.get("labels", torch.full((self.sequences,), -1, dtype=torch.long))
        table = {"sequence": sequence, "position": position, "label": labels[:count][sequence]}
        for key in ("step", "row", "col", "grid_height", "grid_width"):
            table[key] = tensors[f"position_{key}"][position]
        table["token"] = tensors["targets"][:count].flatten()
        return table
