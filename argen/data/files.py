"""Images as files: a PNG grid of many images, and npz archives of uint8 images with labels (never pickles)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from argen.errors import ArgenError


def image_grid(images: torch.Tensor, *, columns: int | None = None, padding: int = 2) -> Image.Image:
    """uint8 (N, C, H, W) → one PIL image (mode "L" for C=1, "RGB" for C=3) of the images in rows.

    ``columns`` defaults to ⌈√N⌉ so the grid is near-square; ``padding`` black pixels separate and frame the tiles.
    """
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.dtype != torch.uint8 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        shape = tuple(images.shape)
        raise ValueError(f"image_grid expects uint8 (N, C, H, W) with N ≥ 1 and C 1 or 3, got {images.dtype} {shape}")
    count, channels, height, width = images.shape
    columns = math.ceil(math.sqrt(count)) if columns is None else max(1, min(columns, count))
    rows = math.ceil(count / columns)
    canvas = np.zeros(
        (channels, rows * (height + padding) + padding, columns * (width + padding) + padding), dtype=np.uint8
    )
    pixels = images.detach().cpu().numpy()
    for index in range(count):
        row, column = divmod(index, columns)
        top = padding + row * (height + padding)
        left = padding + column * (width + padding)
        canvas[:, top : top + height, left : left + width] = pixels[index]
    if channels == 1:
        return Image.fromarray(canvas[0])
    return Image.fromarray(np.ascontiguousarray(canvas.transpose(1, 2, 0)))


# Thumbnails smaller than this are enlarged for grids people look at (`argen sample`, training previews): a 28-pixel
# cell is a smudge in an image viewer.
GRID_CELL = 64


def enlarged(images: torch.Tensor, *, minimum: int = GRID_CELL) -> torch.Tensor:
    """uint8 (N, C, H, W) enlarged by a whole factor, nearest neighbour (sharp pixels), so H reaches ``minimum``."""
    factor = -(-minimum // images.shape[-2])
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1) if factor > 1 else images


def save_images_npz(path: str | Path, images: torch.Tensor, labels: torch.Tensor | None) -> None:
    """uint8 images as (N, H, W) for grayscale or (N, H, W, 3), plus labels (empty when unconditional)."""
    array = images.permute(0, 2, 3, 1).numpy()
    array = array[..., 0] if array.shape[-1] == 1 else array
    np.savez_compressed(path, images=array, labels=(labels if labels is not None else torch.empty(0)).numpy())


def load_images_npz(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read an npz of uint8 images ((N, H, W) or (N, H, W, C) with C 1 or 3) and optional labels; no pickles."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive:
                raise ArgenError(f"{path} has no 'images' array (found: {', '.join(archive.files) or 'nothing'})")
            array = archive["images"]
            labels = archive["labels"] if "labels" in archive else None
    except (OSError, ValueError) as error:
        raise ArgenError(f"cannot read {path} as an npz of images: {error}") from None
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3)):
        raise ArgenError(
            f"{path}: 'images' must be uint8 (N, H, W) or (N, H, W, 1|3), got {array.dtype} {tuple(array.shape)}"
        )
    images = torch.from_numpy(array)
    images = images[:, None] if images.dim() == 3 else images.permute(0, 3, 1, 2)
    if labels is not None and labels.size == 0:
        labels = None
    if labels is not None:
        if labels.shape != (images.shape[0],):
            raise ArgenError(f"{path}: 'labels' must have one entry per image, got shape {tuple(labels.shape)}")
        labels = torch.from_numpy(labels.astype(np.int64))
    return images.contiguous(), labels
