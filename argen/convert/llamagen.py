"""LlamaGen's published files → argen: "Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation"
(Sun et al., arXiv 2406.06525).

The tokenizer (``vq_ds16_c2i.pt``, ``{"model": VQModel state dict}``) becomes an argen ``llamagen-vq`` tokenizer:
width, channel multipliers, blocks, latent channels (``z_channels``), code dimension and codebook size are read
from the weights; the image size (256 for the c2i models) is not in them and comes from the caller. LlamaGen's
separate q/k/v attention convs are stacked into argen's one ``qkv`` conv.
"""

from __future__ import annotations

import re

import torch

from argen.convert.network import SHARED_RULES, Rule, fresh_idle_steps, level_indices, network_sizes, rename
from argen.errors import ArgenError
from argen.tokenizers import TokenizerConfig

IMAGE_SIZE = 256  # the c2i tokenizer's training resolution
DROPPED = ("quantize.codebook_used",)  # a training-time usage buffer


def rules(levels: int) -> list[Rule]:
    """LlamaGen's decoder lists its levels lowest resolution first; argen indexes them by level."""
    return [
        (r"^encoder\.conv_blocks\.(\d+)\.res\.", r"encoder.levels.\1.blocks."),
        (r"^encoder\.conv_blocks\.(\d+)\.attn\.", r"encoder.levels.\1.attentions."),
        (r"^encoder\.conv_blocks\.(\d+)\.downsample\.conv\.", r"encoder.levels.\1.resample."),
        (r"^decoder\.conv_blocks\.(\d+)\.", lambda match: f"decoder.levels.{levels - 1 - int(match.group(1))}."),
        (r"^decoder\.levels\.(\d+)\.res\.", r"decoder.levels.\1.blocks."),
        (r"^decoder\.levels\.(\d+)\.attn\.", r"decoder.levels.\1.attentions."),
        (r"^decoder\.levels\.(\d+)\.upsample\.conv\.", r"decoder.levels.\1.resample."),
        (r"^(encoder|decoder)\.mid\.(\d)\.", r"\1.middle.\2."),
        *SHARED_RULES,
        (r"^quant_conv\.", "quantizer.project_in."),
        (r"^post_quant_conv\.", "quantizer.project_out."),
        (r"^quantize\.embedding\.", "quantizer.codebook."),
    ]


def stack_attention(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``….q.weight``, ``….k.weight``, ``….v.weight`` (and biases) → one ``….qkv.weight`` stacked on outputs."""
    stacked = {}
    for name, tensor in state.items():
        match = re.match(r"^(.*)\.([qkv])\.(weight|bias)$", name)
        if match is None:
            stacked[name] = tensor
        elif match.group(2) == "q":
            prefix, kind = match.group(1), match.group(3)
            parts = [state.get(f"{prefix}.{letter}.{kind}") for letter in "qkv"]
            if any(part is None for part in parts):
                raise ArgenError(f"attention {prefix} lacks one of its q/k/v {kind}s")
            stacked[f"{prefix}.qkv.{kind}"] = torch.cat(parts)
    return stacked


def convert_vq(
    state: dict[str, torch.Tensor], *, image_size: int = IMAGE_SIZE, source: str = "LlamaGen VQ"
) -> tuple[TokenizerConfig, dict[str, torch.Tensor]]:
    """LlamaGen's VQModel state dict → (``llamagen-vq`` TokenizerConfig, argen state dict in fp32)."""
    levels = len(level_indices(state, "decoder.conv_blocks"))
    converted = {name: tensor.float() for name, tensor in rename(state, rules(levels), drop=DROPPED).items()}
    converted = stack_attention(converted)
    if "quantizer.codebook.weight" not in converted or "quantizer.project_in.weight" not in converted:
        raise ArgenError(f"{source}: no quantize.embedding / quant_conv weights; is this LlamaGen's vq_*.pt?")
    sizes = network_sizes(converted, source=source)
    if levels != int(sizes["downsample"]) + 1:
        raise ArgenError(f"{source}: the decoder has {levels} levels, the encoder {int(sizes['downsample']) + 1}")
    codebook_size, code_dim = converted["quantizer.codebook.weight"].shape
    fresh_idle_steps(converted)
    config = TokenizerConfig(
        kind="llamagen-vq",
        image_size=image_size,
        codebook_size=int(codebook_size),
        code_dim=int(code_dim),
        restart_after=0,  # a published codebook: no dead-code restarts
        **sizes,
    )
    return config, converted


__all__ = ["IMAGE_SIZE", "convert_vq"]
