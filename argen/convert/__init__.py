"""The published checkpoints of other codebases → argen release directories (``argen convert``).

One file per family: `var` (VAR, arXiv 2404.02905), `llamagen` (LlamaGen, arXiv 2406.06525); NAR joins when the
transformer options of issue 25 exist. `files` reads the official ``.pth``/``.pt`` files without executing pickles;
`network` maps the VQGAN encoder/decoder keys both tokenizers share onto argen's `tokenizers.vqgan` modules.

Each family converts a state dict (already loaded) into ``(TokenizerConfig, argen state dict)``, with the sizes read
from the weights and what weights cannot say passed in; `write_tokenizer` checks the result against the tokenizer
it describes before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import torch

from argen.checkpoint import save_release
from argen.errors import ArgenError
from argen.tokenizers import TokenizerConfig, build_tokenizer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_tokenizer(config: TokenizerConfig, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Refuse, in one line, a converted state dict that does not fit the tokenizer its config builds."""
    tokenizer = build_tokenizer(config)
    expected = tokenizer.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ArgenError(f"{source}: not the expected layout (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ArgenError(
                f"{source}: tensor {name} has shape {tuple(state[name].shape)}, expected {tuple(tensor.shape)}"
            )


def write_tokenizer(
    out: str | Path,
    config: TokenizerConfig,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    dtype: str = "fp32",
    extra: dict[str, str] | None = None,
) -> Path:
    """Check, then write ``out/config.json`` + ``out/model.safetensors`` (floats stored as ``dtype``)."""
    if dtype not in DTYPES:
        raise ArgenError(f"unknown --dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    check_tokenizer(config, state, source=source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stored = None if dtype == "fp32" else DTYPES[dtype]
    save_release(
        out, kind="tokenizer", config=config, state_dict=state, dtype=stored, extra={"source": source, **(extra or {})}
    )
    return out


__all__ = ["DTYPES", "check_tokenizer", "write_tokenizer"]
