"""Checkpoints: the release format and fingerprints, the training state, atomic writes, the run-directory lock.

Two formats, for two readers:

- **Release** (what users share and load): a directory with ``config.json`` (plain types: ``format_version``,
  the component ``kind``, its ``config``) and ``model.safetensors``. Loading checks kind, version, config keys
  and every tensor's shape before any weight is copied, and refuses a mismatch naming both sides.
- **Training state** (what resume reads): ``train_state.pt`` holding plain types only (state dicts, ints,
  floats, strings, lists, RNG states as tensors), so ``torch.load(weights_only=True)`` reads it and no user
  file is ever unpickled.

Every file is written to a temporary name in the same directory, flushed, fsynced and renamed over the old
one: a crash at any moment leaves either the previous complete file or the new complete file.

A model directory (``argen train --out``) is two releases, ``tokenizer/`` and ``generator/`` (`GeneratorConfig`:
the order and the transformer's config); `release_fingerprint` identifies a release by its bytes, which is how a
token cache, a generator and a refiner are checked against their tokenizer. A run directory has one owner:
`run_directory_lock` holds ``OUT/.lock`` while a trainer writes there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from argen.errors import ArgenError
from argen.release_checks import build_checked, check_config_types

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "train_state.pt"
LOCK_NAME = ".lock"


def shipped_checkpoint(data: str, name: str = "") -> Path | None:
    """The repository's shipped ``checkpoints/DATA/NAME`` (a release or model directory; without a name the folder
    of them all), or None.

    Looked for under the working directory first, then beside the installed package (an editable install or a
    source checkout), so `argen demo` and `argen eval` find them from anywhere inside a clone.
    """
    for root in (Path(), Path(__file__).resolve().parent.parent):  # relative first: it reads better in reports
        candidate = root / "checkpoints" / data / name
        if candidate.is_dir():
            return candidate
    return None


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` and move the result onto ``path`` only once it is complete on disk.

    The temporary file lives in the same directory so the final ``os.replace`` is a rename within one file
    system, which POSIX makes atomic: readers see the old file or the new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        write(temporary)
        # mkstemp creates files only the owner can read; give the final file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with open(temporary, "rb+") as stream:
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    # fsync the directory so the rename itself survives a power loss.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text))


# ---------------------------------------------------------------------------------------------------------------
# Release format


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass (or an already plain dict) as a JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(config if isinstance(config, dict) else dataclasses.asdict(config)))


def config_from_dict(config_class: type, values: dict[str, Any], *, source: str) -> Any:
    """Build ``config_class`` from ``values``, refusing unknown keys rather than dropping them silently, and values
    of the wrong type (`argen.release_checks.check_config_types`)."""
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ArgenError(
            f"{source}: unknown {config_class.__name__} key(s) {', '.join(unknown)}; this argen knows "
            f"{', '.join(sorted(known))}. The file was written by another version or edited by hand."
        )
    check_config_types(config_class, values, source=source)
    return config_class(**values)


def save_release(
    directory: str | Path,
    *,
    kind: str,
    config: Any,
    state_dict: dict[str, torch.Tensor],
    dtype: torch.dtype | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``directory/config.json`` and ``directory/model.safetensors`` atomically.

    ``dtype`` (e.g. ``torch.float16``) stores floating tensors in a smaller type for shipping; loading casts
    them back to the model's own dtype. ``extra`` holds plain-typed metadata (class names, training step).
    """
    directory = Path(directory)
    tensors = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    document = {"format_version": FORMAT_VERSION, "kind": kind, "config": config_to_dict(config)}
    if extra:
        document["extra"] = extra
    # Weights first, config last: config.json appearing is the sign that a release is complete.
    atomic_write(directory / WEIGHTS_NAME, lambda temporary: save_file(tensors, str(temporary)))
    atomic_write_text(directory / CONFIG_NAME, json.dumps(document, indent=2) + "\n")


def read_release_config(directory: str | Path, *, kind: str | tuple[str, ...]) -> dict[str, Any]:
    """Read and check ``config.json``: it exists, parses, has this format version and the expected kind."""
    directory = Path(directory)
    kinds = (kind,) if isinstance(kind, str) else kind
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise ArgenError(f"{directory} is not an argen {' or '.join(kinds)} directory: it has no {CONFIG_NAME}")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArgenError(f"{path} is not valid JSON ({error}); the checkpoint is damaged") from None
    if not isinstance(document, dict) or "kind" not in document or "config" not in document:
        raise ArgenError(f"{path} is not an argen release config (no 'kind'/'config' keys)")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise ArgenError(
            f"{path} has format_version {version!r} but this argen reads version {FORMAT_VERSION}; "
            "upgrade argen or re-export the checkpoint"
        )
    if document["kind"] not in kinds:
        raise ArgenError(
            f"{directory} holds a '{document['kind']}' checkpoint, but a {' or '.join(kinds)} checkpoint is needed here"
        )
    return document


RELEASE_KINDS = ("tokenizer", "generator", "classifier")
GENERATOR_KIND = "generator"


@dataclasses.dataclass
class GeneratorConfig:
    """What config.json of a generator release holds: the order and the transformer's config (a model directory
    is ``tokenizer/`` + ``generator/``, two releases; `argen.Pipeline` loads the pair)."""

    order: str
    transformer: dict = dataclasses.field(default_factory=dict)


def release_fingerprint(directory: str | Path) -> str:
    """A short hash of a release's config.json and weights: two caches agree iff their tokenizers are identical."""
    digest = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        with open(Path(directory) / name, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def export_release(
    source: str | Path,
    destination: str | Path,
    *,
    dtype: torch.dtype | None = None,
    extra_updates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy a release with its floating tensors stored as ``dtype`` (config and extra kept, ``extra_updates``
    merged in); returns the written config document. Training state is not part of a release and stays behind."""
    document = read_release_config(source, kind=RELEASE_KINDS)
    try:
        tensors = load_file(str(Path(source) / WEIGHTS_NAME))
    except (OSError, SafetensorError) as error:
        raise ArgenError(f"cannot read {Path(source) / WEIGHTS_NAME}: {error}") from None
    extra = {**document.get("extra", {}), **(extra_updates or {})}
    if dtype is not None:
        extra["stored_dtype"] = str(dtype).removeprefix("torch.")
    save_release(
        destination, kind=document["kind"], config=document["config"], state_dict=tensors, dtype=dtype, extra=extra
    )
    return read_release_config(destination, kind=document["kind"])


def copy_release(source: str | Path, destination: str | Path) -> None:
    """Copy a release directory's two files (used to put the tokenizer beside a generator)."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_NAME, CONFIG_NAME):  # config last: its presence marks a complete release
        temporary = destination / f".{name}.copy"
        shutil.copyfile(Path(source) / name, temporary)
        temporary.replace(destination / name)


def load_release_weights(directory: str | Path, model: torch.nn.Module) -> None:
    """Load ``model.safetensors`` into ``model`` after checking names and shapes; nothing is copied on mismatch.

    A model that renamed parameters between versions maps the file's old names with its ``upgrade_state_dict``.
    """
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise ArgenError(f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}; the checkpoint is incomplete")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ArgenError(f"{path} could not be read as safetensors ({error}); the checkpoint is damaged") from None
    upgrade = getattr(model, "upgrade_state_dict", None)
    if upgrade is not None:
        tensors = upgrade(tensors)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ArgenError(
            f"{path} does not match the model built from its config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for name in expected:  # model order, so the message names the first layer that differs
        tensor = tensors[name]
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ArgenError(
                f"{path}: tensor '{name}' has shape {tuple(tensor.shape)} in the file but "
                f"{tuple(expected[name].shape)} in the model built from config.json; "
                "the weights belong to another configuration"
            )
    with torch.no_grad():
        for name, tensor in tensors.items():
            expected[name].copy_(tensor.to(expected[name].dtype))


def load_release(
    directory: str | Path,
    *,
    kind: str,
    config_class: type,
    build: Callable[[Any], torch.nn.Module],
    overrides: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a release directory: check kind and version, rebuild the model from its config (after checking on the
    meta device that its shapes are the weights file's: `argen.release_checks.build_checked`), load the weights.

    ``overrides`` fills config keys an older release lacks (its behaviour then, not today's default). Returns the
    model (in eval mode) and the whole config document (for ``extra`` metadata).
    """
    document = read_release_config(directory, kind=kind)
    values = {**(overrides or {}), **document["config"]}
    config = config_from_dict(config_class, values, source=str(Path(directory) / CONFIG_NAME))
    model = build_checked(lambda: build(config), weights=Path(directory) / WEIGHTS_NAME, config=config)
    load_release_weights(directory, model)
    return model.eval(), document


# ---------------------------------------------------------------------------------------------------------------
# Training state


def capture_rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states as plain types (tensors, ints, lists) for ``weights_only`` loading."""
    numpy_state = np.random.get_state()
    python_version, python_internal, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "position": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": {"version": python_version, "internal": list(python_internal), "gauss": python_gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss"]))


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write the training state atomically with ``torch.save`` (plain types only)."""
    atomic_write(path, lambda temporary: torch.save(state, temporary))


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read a training state with ``weights_only=True``: a file holding anything but plain types is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ArgenError(
            f"{path} could not be loaded safely ({first_line}); rerun with --fresh to start over"
        ) from None


# ---------------------------------------------------------------------------------------------------------------
# Run-directory lock

# Directories this process holds, with how many nested `run_directory_lock` blocks hold each: train_generator
# locks before it writes the token cache, and the fit it calls locks the same directory again.
_held_locks: dict[Path, list[int]] = {}


@contextmanager
def run_directory_lock(directory: str | Path) -> Iterator[None]:
    """Hold ``directory/.lock`` for the block, so that one trainer at a time writes into ``directory``.

    The lock is an ``fcntl.flock`` on the open file, which the kernel releases when the process ends however it ends
    (SIGKILL included), so a lock left by a killed run never blocks a rerun; the file itself stays and holds the pid
    of the last owner. A second trainer on a held directory stops at once with an `ArgenError` naming the holder.
    Re-entrant within one process. Without ``fcntl`` (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        yield
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    if key in _held_locks:
        _held_locks[key][1] += 1
        try:
            yield
        finally:
            _held_locks[key][1] -= 1
        return
    handle = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(handle, 64).decode(errors="replace").strip() or "whose pid is not written yet"
        os.close(handle)
        raise ArgenError(
            f"{directory} is in use by another trainer (process {holder}): wait for it to finish or stop it, or "
            "choose another --out"
        ) from None
    os.ftruncate(handle, 0)
    os.write(handle, f"{os.getpid()}\n".encode())
    _held_locks[key] = [handle, 1]
    try:
        yield
    finally:
        del _held_locks[key]
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)
