"""The VQGAN encoder/decoder keys that VAR's and LlamaGen's tokenizers share, mapped onto `argen.tokenizers.vqgan`,
and the network sizes read back from the mapped weights.

Both codebases name the stem ``conv_in``, the skip ``nin_shortcut``, the attention output ``proj_out``, the end
``norm_out``/``conv_out``; their level and middle containers differ and are renamed by the family's own rules
(`var`, `llamagen`) before these.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from argen.errors import ArgenError

Rule = tuple[str, str | Callable[[re.Match[str]], str]]

SHARED_RULES: list[Rule] = [
    (r"^(encoder|decoder)\.conv_in\.", r"\1.stem."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.norm."),
    (r"^(encoder|decoder)\.conv_out\.", r"\1.head."),
    (r"\.nin_shortcut\.", ".skip."),
    (r"\.proj_out\.", ".projection."),
]


def rename(state: dict[str, torch.Tensor], rules: list[Rule], *, drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Apply every rule (regex, replacement) in turn to each key; keys starting with a ``drop`` prefix go."""
    renamed = {}
    for name, tensor in state.items():
        if name.startswith(drop):
            continue
        for pattern, replacement in rules:
            name = re.sub(pattern, replacement, name)
        renamed[name] = tensor
    return renamed


def level_indices(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """The distinct integers N of keys ``prefix.N.…``, sorted."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(match.group(1)) for name in state if (match := pattern.match(name))})


def network_sizes(state: dict[str, torch.Tensor], *, source: str) -> dict[str, int | list[int]]:
    """TokenizerConfig fields of the network, read from argen-named weights: channels, width, channel_mult,
    downsample, blocks, latent_dim."""
    if "encoder.stem.weight" not in state or "encoder.head.weight" not in state:
        raise ArgenError(f"{source}: no encoder.conv_in / encoder.conv_out weights; is this the tokenizer's file?")
    width, channels = state["encoder.stem.weight"].shape[:2]
    levels = level_indices(state, "encoder.levels")
    blocks = len(level_indices(state, "encoder.levels.0.blocks"))
    if not levels or blocks == 0:
        raise ArgenError(f"{source}: found no encoder levels with residual blocks; not a VQGAN-style tokenizer")
    multipliers = []
    for level in levels:
        outputs = state[f"encoder.levels.{level}.blocks.0.conv1.weight"].shape[0]
        if outputs % width:
            raise ArgenError(f"{source}: level {level} has {outputs} channels, not a multiple of the stem's {width}")
        multipliers.append(outputs // width)
    return {
        "channels": int(channels),
        "width": int(width),
        "channel_mult": multipliers,
        "downsample": len(levels) - 1,
        "blocks": blocks,
        "latent_dim": int(state["encoder.head.weight"].shape[0]),
    }


def fresh_idle_steps(state: dict[str, torch.Tensor]) -> None:
    """argen's codebook keeps a per-code idle counter for dead-code restarts; published codebooks start at 0."""
    size = state["quantizer.codebook.weight"].shape[0]
    state["quantizer.codebook.idle_steps"] = torch.zeros(size, dtype=torch.long)
