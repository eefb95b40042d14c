"""Mixed precision and torch.compile: what can run where, checked before any work starts."""

from __future__ import annotations

import contextlib

import torch

from argen.errors import ArgenError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, device: torch.device | str) -> None:
    """ArgenError unless ``precision`` can run on ``device``."""
    if precision not in PRECISIONS:
        raise ArgenError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if (
        precision == "bf16"
        and device.type == "cuda"
        and torch.cuda.is_available()
        and not torch.cuda.is_bf16_supported()
    ):
        raise ArgenError("this GPU has no bfloat16 support: use --precision fp32")


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The mixed-precision context of ``precision``: nothing for fp32; for bf16, `torch.autocast` in bfloat16 (matmuls
    and attention in bf16, norms, softmax and losses in fp32; weights stay fp32). Meant for GPUs: on a CPU without
    native bf16 matmuls it is slower than fp32."""
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def check_compile() -> None:
    """ArgenError, in one line, when torch.compile cannot run here (no C compiler for inductor, or an unsupported
    Python)."""
    import shutil
    import sys

    if sys.platform == "win32":
        raise ArgenError("--compile needs torch.compile's inductor, which this build does not support on Windows")
    if not any(shutil.which(compiler) for compiler in ("cc", "gcc", "clang", "c++", "g++")):
        raise ArgenError("--compile needs a C compiler (gcc or clang) for torch.compile's inductor: install one")
    try:
        import torch._dynamo  # noqa: F401
    except Exception as error:  # an unsupported Python version fails here
        raise ArgenError(f"torch.compile does not work in this environment ({error}): run without --compile") from None


__all__ = ["PRECISIONS", "autocast", "check_compile", "check_precision"]
