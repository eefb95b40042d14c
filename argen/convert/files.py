"""Reading the official checkpoint files without executing them.

``.pth``/``.pt`` files are pickles, and a pickle can run any code while it loads. They are read with
``torch.load(weights_only=True)``, whose unpickler builds only tensors and plain containers, plus the one class the
published files need (``argparse.Namespace``: LlamaGen's training saves pickle its ``args``). Anything else — a
payload that would call a function, a class from the saving code — is refused in one line before anything runs.
``.safetensors`` files hold no code at all.

The published layouts: VAR's files are plain state dicts; LlamaGen's are ``{"model": state_dict, ...}`` (training
saves add ``optimizer``, ``steps``, ``args``); some re-saves use ``{"state_dict": ...}``. `load_state_dict` unwraps
these and returns tensors only.
"""

from __future__ import annotations

import argparse
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from argen.errors import ArgenError

SAFE_GLOBALS = [argparse.Namespace]  # LlamaGen's pickled training args
WRAPPERS = ("model", "state_dict", "module", "ema")  # checked in this order; the first holding tensors wins


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_file_safely(path: str | Path) -> object:
    """The file's payload, loaded without executing code: `ArgenError` (one line) for anything unsafe or damaged."""
    path = Path(path)
    if not path.is_file():
        raise ArgenError(f"{path} does not exist or is not a file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ArgenError(f"{path} could not be read as safetensors ({first_line(error)})") from None
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, TypeError) as error:
        raise ArgenError(
            f"{path} was refused: it is not a plain weights file ({first_line(error)[:200]}); argen loads only tensors "
            "and plain containers from pickles, never code"
        ) from None


def tensors_of(payload: object) -> dict[str, torch.Tensor] | None:
    """``payload`` if it is a non-empty dict of name → tensor, else None."""
    if isinstance(payload, dict) and payload and all(isinstance(key, str) for key in payload):
        if all(isinstance(value, torch.Tensor) for value in payload.values()):
            return payload
    return None


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint file → its state dict (name → tensor), unwrapping ``{"model": …}`` and ``{"state_dict": …}``."""
    payload = load_file_safely(path)
    state = tensors_of(payload)
    if state is None and isinstance(payload, dict):
        state = next((tensors_of(payload[key]) for key in WRAPPERS if tensors_of(payload.get(key)) is not None), None)
    if state is None:
        keys = sorted(map(str, payload))[:6] if isinstance(payload, dict) else type(payload).__name__
        raise ArgenError(
            f"{path} holds no state dict (found {keys}); expected name → tensor, or one under "
            f"{', '.join(repr(key) for key in WRAPPERS)}"
        )
    return state


__all__ = ["SAFE_GLOBALS", "load_file_safely", "load_state_dict"]
