"""Pixel conversions: uint8 images ⇄ the [-1, 1] floats models take, and batched resizing of uint8 tensors.

Legend: B (or N) images, C channels (1 or 3), H/W size.
"""

from __future__ import annotations

import torch
from torch.nn import functional


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] → float32 in [-1, 1], 0 ↦ -1 and 255 ↦ 1."""
    if images.dtype != torch.uint8:
        raise TypeError(f"images_to_float expects uint8 images, got {images.dtype}")
    return images.to(torch.float32).div(127.5).sub(1.0)


def float_to_images(images: torch.Tensor) -> torch.Tensor:
    """Float (B, C, H, W) in [-1, 1] → uint8, clamped first so overshooting model outputs saturate, then rounded."""
    return images.detach().to(torch.float32).clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)


def resize_tensor_images(images: torch.Tensor, *, image_size: int | None, channels: int | None) -> torch.Tensor:
    """uint8 (N, C, H, W) → uint8 (N, channels, image_size, image_size): centre square, bicubic resize, channels.

    Done on tensors rather than through PIL because IDX images arrive as one array: tens of thousands of them
    resize in one batched call instead of one PIL round trip each.
    """
    count, native_channels, height, width = images.shape
    if channels is not None and channels != native_channels:
        if native_channels == 1:
            images = images.expand(-1, channels, -1, -1)
        else:
            # ITU-R 601-2 luma, the weights PIL's convert("L") uses, so both sources agree.
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.to(torch.float32) * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if image_size is not None and (height, width) != (image_size, image_size):
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = images[:, :, top : top + side, left : left + side]
        resized = []
        # Chunks bound the float32 copy to a few tens of MB whatever the dataset size.
        for start in range(0, count, 4096):
            chunk = square[start : start + 4096].to(torch.float32)
            chunk = functional.interpolate(
                chunk, size=(image_size, image_size), mode="bicubic", antialias=True, align_corners=False
            )
            resized.append(chunk.round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(resized)
    return images.contiguous()
