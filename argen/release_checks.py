"""What a release's ``config.json`` declares, checked against its ``model.safetensors`` before anything is built.

A config is a small text file anyone can edit: ``"width": 12000`` in a 3 MB model's config would otherwise make the
loader allocate a 20 GB model before it looks at a single weight. So a release is built twice: first on PyTorch's
``meta`` device, which gives every parameter's and buffer's exact shape and allocates nothing, then, once those shapes
equal the ones the weights file's header declares (read without loading a tensor) and the whole model fits a bound
derived from the file's size, for real. A mismatch is refused in one line naming the tensor and the config key(s)
whose values appear in the declared shape (``width``, ``num_classes``, ``codebook_size``, ...).

The meta build itself costs Python objects per module, so it is stopped once it has made more modules than the file
could fill (``depth: 1000000`` would otherwise take gigabytes of module objects before any check).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from argen.errors import ArgenError

# A model may hold a few modules without tensors per module with tensors (activations, dropout, pooling), and buffers
# the file does not store (masks, tables); beyond these bounds the config declares a model the file cannot be.
MODULES_PER_TENSOR = 4
SPARE_MODULES = 64
# Declared bytes (parameters and buffers, at the model's dtype) at most this many times the file's size, plus a
# constant: a float16 release loads as float32 (twice its size), and derived buffers are small next to the weights.
SIZE_FACTOR = 4
SPARE_BYTES = 64 * 2**20


def check_config_types(config_class: type, values: dict[str, object], *, source: str) -> None:
    """ArgenError naming the key when a value of ``values`` is not of its ``config_class`` field's type
    (``"num_classes": 1e9`` is a float, ``"width": "64"`` a string): ints are whole JSON numbers, floats finite."""
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if field.name in values and not _matches(values[field.name], hints[field.name]):
            shown = repr(values[field.name])[:40]
            raise ArgenError(f"{source}: {field.name} must be {_describe(hints[field.name])}, got {shown}; fix it")


def _matches(value: object, hint: object) -> bool:
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, argument) for argument in arguments)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        return isinstance(value, list) and all(_matches(item, arguments[0]) for item in value if arguments)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # a type this check does not know: the config class checks it


def _describe(hint: object) -> str:
    text = str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return {"int": "a whole number", "float": "a finite number", "bool": "true or false"}.get(text, text)


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in the safetensors file ``path``, read from its header without loading a tensor."""
    if not path.is_file():
        raise ArgenError(f"{path.parent} has config.json but no {path.name}; the checkpoint is incomplete")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise ArgenError(f"{path} could not be read as safetensors ({error}); the checkpoint is damaged") from None


def build_checked(
    build: Callable[[], torch.nn.Module], *, weights: Path, config: object, upgrade_names: bool = True
) -> torch.nn.Module:
    """``build()`` once its model, built on the meta device, has exactly the tensors and shapes of ``weights`` and
    fits the size bound; ``config`` (a dataclass or dict) names the keys a refusal blames."""
    shapes = weight_shapes(weights)
    limit = MODULES_PER_TENSOR * len(shapes) + SPARE_MODULES
    made = [0]

    def count(module: torch.nn.Module, name: str, submodule: torch.nn.Module | None) -> None:
        made[0] += 1
        if made[0] > limit:
            raise _TooManyModules

    handle = torch.nn.modules.module.register_module_module_registration_hook(count)
    try:
        with torch.device("meta"):
            skeleton = build()
    except _TooManyModules:
        raise ArgenError(
            f"{weights.parent}/config.json declares a model of more than {limit} modules, but {weights.name} holds "
            f"{len(shapes)} tensors{_blame(config, shapes=shapes)}; the config was edited or belongs "
            "to other weights"
        ) from None
    finally:
        handle.remove()
    if upgrade_names and hasattr(skeleton, "upgrade_state_dict"):
        shapes = {name: tuple(t.shape) for name, t in skeleton.upgrade_state_dict(_meta_tensors(shapes)).items()}
    _compare(skeleton, shapes, weights=weights, config=config)
    return build()


class _TooManyModules(Exception):
    pass


def _meta_tensors(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}


def _compare(skeleton: torch.nn.Module, shapes: dict[str, tuple[int, ...]], *, weights: Path, config: object) -> None:
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise ArgenError(
            f"{weights} does not match the model built from its config.json: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}{_blame(config, shapes=shapes, names=missing)}"
        )
    for name, shape in expected.items():  # model order: the message names the first tensor that differs
        if shape != shapes[name]:
            raise ArgenError(
                f"{weights}: tensor '{name}' has shape {shapes[name]} in the file but {shape} in the model "
                f"config.json describes{_blame(config, dimensions=set(shape) - set(shapes[name]))}; the "
                "config was edited or the weights belong to another configuration"
            )
    declared = sum(tensor.numel() * tensor.element_size() for tensor in (*skeleton.parameters(), *skeleton.buffers()))
    bound = SIZE_FACTOR * weights.stat().st_size + SPARE_BYTES
    if declared > bound:
        raise ArgenError(
            f"{weights.parent}/config.json declares a model of {declared / 2**20:.0f} MiB, more than "
            f"{bound / 2**20:.0f} MiB for {weights.name}'s {weights.stat().st_size / 2**20:.1f} MiB; the config was "
            "edited or belongs to other weights"
        )


def _blame(
    config: object,
    *,
    dimensions: set[int] | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    names: list[str] | None = None,
) -> str:
    """' (config.json: key = value, ...)' naming the integer config keys a mismatch comes from: those whose value is
    one of the differing ``dimensions``; else those that count repeated modules (``names``: the model's tensors the
    file lacks, whose largest index + 1 is such a count) or exceed the file's tensor count and appear in none of its
    ``shapes``. Empty when no key stands out."""
    items = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config or {})
    numbers = {key: value for key, value in items.items() if isinstance(value, int) and not isinstance(value, bool)}
    if dimensions is not None:
        # value + 1: tables with a row for the null class or the start token (num_classes + 1 rows)
        keys = [key for key, value in numbers.items() if value in dimensions or value + 1 in dimensions]
    else:
        shapes = shapes or {}
        present = {dimension for shape in shapes.values() for dimension in shape}
        indices = [int(part) for name in names or [] for part in re.findall(r"\.(\d+)\.", name)]
        counts = {max(indices) + 1} if indices else set()
        keys = [
            key for key, value in numbers.items()
            if value in counts or (value > len(shapes) and value not in present)
        ]  # fmt: skip
    return f" (config.json: {', '.join(f'{key} = {numbers[key]}' for key in keys)})" if keys else ""


__all__ = ["build_checked", "check_config_types", "weight_shapes"]
