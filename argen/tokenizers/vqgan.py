"""The VQGAN conv encoder and decoder that VAR's and LlamaGen's published tokenizers share: "Taming Transformers
for High-Resolution Image Synthesis" (Esser et al., arXiv 2012.09841), in the layout of latent-diffusion's vq-f16
(Rombach et al., arXiv 2112.10752) that "Visual Autoregressive Modeling" (VAR, arXiv 2404.02905) and "Autoregressive
Model Beats Diffusion" (LlamaGen, arXiv 2406.06525) both use.

Per resolution level (widths ``width · channel_mult``): ``blocks`` residual blocks, a self-attention block after
each at the lowest level, then a stride-2 3×3 conv on the zero-padded (right, bottom) input; a middle of residual,
attention, residual; GroupNorm-SiLU-conv out. The decoder mirrors it with ``blocks + 1`` residual blocks per level
and nearest ×2 upsampling followed by a 3×3 conv. GroupNorm has 32 groups and eps 1e-6 as in both codebases;
widths that are not a multiple of 32 (argen's tiny test configs, which the official code cannot build) fall
back to argen's own group rule.

The arithmetic follows the official modules operation by operation (the attention as two batched products with
the 1/√C scale applied to the logits), so that encoding gives the official ids, not merely close latents.
Plain ``nn.Conv2d`` throughout (not argen's oneDNN wrapper): the same kernels as the official code, whatever the
grad mode. ``project`` is VAR's ``quant_conv``/``post_quant_conv`` (3×3, latent → latent) where a tokenizer has one;
LlamaGen's 1×1 projections to its 8-dimensional codes live in its quantizer instead.

Shapes: B batch, C image channels, H/W image size, D latent channels, h/w grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from argen.tokenizers.autoencoder import _groups, stage_widths

if TYPE_CHECKING:
    from argen.tokenizers import TokenizerConfig

EPSILON = 1e-6  # GroupNorm eps of both official codebases (PyTorch's default is 1e-5)


def normalization(channels: int) -> nn.GroupNorm:
    """GroupNorm(32, eps 1e-6) as published; argen's group rule for widths the official code cannot take."""
    groups = 32 if channels % 32 == 0 else _groups(channels)
    return nn.GroupNorm(groups, channels, eps=EPSILON)


class ResidualBlock(nn.Module):
    """x → skip(x) + conv2(SiLU(GN(conv1(SiLU(GN(x)))))); ``skip`` is a 1×1 conv when the width changes."""

    def __init__(self, inputs: int, outputs: int, convolution: type[nn.Conv2d]):
        super().__init__()
        self.norm1 = normalization(inputs)
        self.conv1 = convolution(inputs, outputs, 3, padding=1)
        self.norm2 = normalization(outputs)
        self.conv2 = convolution(outputs, outputs, 3, padding=1)
        self.skip = convolution(inputs, outputs, 1) if inputs != outputs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the h·w positions of a (B, D, h, w) map, with a residual connection.

    One 1×1 conv gives q, k and v stacked (VAR's ``qkv``; LlamaGen's separate q/k/v convs concatenate into it).
    """

    def __init__(self, channels: int, convolution: type[nn.Conv2d]):
        super().__init__()
        self.norm = normalization(channels)
        self.qkv = convolution(channels, 3 * channels, 1)
        self.projection = convolution(channels, channels, 1)
        self.scale = channels**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(batch, 3, channels, height * width).unbind(1)  # (B, D, h·w) each
        weights = torch.bmm(q.permute(0, 2, 1), k).mul(self.scale).softmax(dim=2)  # (B, h·w query, h·w key)
        attended = torch.bmm(v, weights.permute(0, 2, 1))  # (B, D, h·w)
        return x + self.projection(attended.reshape(batch, channels, height, width))


class Level(nn.Module):
    """One resolution level: residual blocks, attention after each (lowest level only), a resampling conv."""

    def __init__(self, widths: tuple[int, int], count: int, *, attention: bool, convolution: type[nn.Conv2d]):
        super().__init__()
        inputs, outputs = widths
        self.blocks = nn.ModuleList(
            ResidualBlock(inputs if index == 0 else outputs, outputs, convolution) for index in range(count)
        )
        self.attentions = nn.ModuleList(Attention(outputs, convolution) for _ in range(count if attention else 0))
        self.width = outputs if count else inputs  # without blocks a level keeps its input width, as officially
        self.resample: nn.Conv2d | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            h = block(h)
            if len(self.attentions):
                h = self.attentions[index](h)
        return h


def middle(channels: int, convolution: type[nn.Conv2d]) -> nn.Sequential:
    return nn.Sequential(
        ResidualBlock(channels, channels, convolution),
        Attention(channels, convolution),
        ResidualBlock(channels, channels, convolution),
    )


class VQGANEncoder(nn.Module):
    """images (B, C, H, W) → latent (B, D, H / 2^downsample, W / 2^downsample); ``project_kernel`` > 0 adds a
    latent → latent conv at the end (VAR's 3×3 ``quant_conv``)."""

    def __init__(self, config: TokenizerConfig, *, project_kernel: int = 0):
        super().__init__()
        widths = stage_widths(config)  # width · channel_mult, one per level
        self.stem = nn.Conv2d(config.channels, widths[0], 3, padding=1)
        self.levels = nn.ModuleList()
        previous = widths[0]
        for index, level_width in enumerate(widths):
            last = index == len(widths) - 1
            level = Level((previous, level_width), config.blocks, attention=last, convolution=nn.Conv2d)
            previous = level.width
            if not last:
                level.resample = nn.Conv2d(previous, previous, 3, stride=2)
            self.levels.append(level)
        self.middle = middle(previous, nn.Conv2d)
        self.norm = normalization(previous)
        self.head = nn.Conv2d(previous, config.latent_dim, 3, padding=1)
        kernel = project_kernel
        self.project = nn.Conv2d(config.latent_dim, config.latent_dim, kernel, padding=kernel // 2) if kernel else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.stem(images)
        for level in self.levels:
            h = level(h)
            if level.resample is not None:
                h = level.resample(F.pad(h, (0, 1, 0, 1)))  # the official asymmetric padding of stride-2 convs
        h = self.head(F.silu(self.norm(self.middle(h))))
        return h if self.project is None else self.project(h)


class VQGANDecoder(nn.Module):
    """latent (B, D, h, w) → images (B, C, h·2^downsample, w·2^downsample); ``project_kernel`` > 0 adds VAR's
    ``post_quant_conv`` first. ``clamp`` bounds the output to [-1, 1] outside training, as VAR's decoding does."""

    def __init__(self, config: TokenizerConfig, *, project_kernel: int = 0, clamp: bool = False):
        super().__init__()
        widths = stage_widths(config)
        kernel = project_kernel
        self.project = nn.Conv2d(config.latent_dim, config.latent_dim, kernel, padding=kernel // 2) if kernel else None
        self.stem = nn.Conv2d(config.latent_dim, widths[-1], 3, padding=1)
        self.middle = middle(widths[-1], nn.Conv2d)
        self.levels = nn.ModuleList()  # levels[i] works at level i's resolution; run from the last to the first
        previous = widths[-1]
        for index in reversed(range(len(widths))):
            last = index == len(widths) - 1
            level = Level((previous, widths[index]), config.blocks + 1, attention=last, convolution=nn.Conv2d)
            if index != 0:
                level.resample = nn.Conv2d(widths[index], widths[index], 3, padding=1)
            self.levels.insert(0, level)
            previous = widths[index]
        self.norm = normalization(widths[0])
        self.head = nn.Conv2d(widths[0], config.channels, 3, padding=1)
        self.clamp = clamp

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h = latent if self.project is None else self.project(latent)
        h = self.middle(self.stem(h))
        for level in reversed(self.levels):
            h = level(h)
            if level.resample is not None:
                h = level.resample(F.interpolate(h, scale_factor=2, mode="nearest"))
        images = self.head(F.silu(self.norm(h)))
        return images.clamp(-1, 1) if self.clamp and not self.training else images
