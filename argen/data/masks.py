"""Edit masks and the pixel work around an edit: parsing masks, which token cells they leave known, filling the
masked pixels before encoding, and pasting the edit back into the original.

A mask is bool (B, H, W), True = regenerate (white in a mask picture). A token cell is *known* when its window of
the image holds no masked pixel (the adaptive-pooling window of cell (r, c) of an h×w grid over an H×W image, rows
⌊rH/h⌋ to ⌈(r+1)H/h⌉): a cell only partly outside would carry what the mask hides back into the result.

Legend: B images, C channels, H/W image size, h/w grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from argen.data.images import read_image
from argen.errors import ArgenError

MaskSource = Tensor | Image.Image | Sequence[Tensor | Image.Image] | None


def as_masks(masks: MaskSource, *, batch: int, height: int, width: int) -> Tensor:
    """Masks → bool (B, H, W), True = regenerate. Accepts None (everything), PIL images (read by
    `argen.data.images.read_image` as grey: ≥ 128 regenerates), bool or 0/1 tensors (H, W) / (B, H, W) /
    (B, 1, H, W), or a list of those; one mask serves every image."""
    if masks is None:
        return torch.ones(batch, height, width, dtype=torch.bool)
    if isinstance(masks, Image.Image):
        masks = [masks]
    if isinstance(masks, (list, tuple)):
        if not masks:
            raise ArgenError("the list of masks is empty: give one mask per image, or one for all")
        parts = []
        for mask in masks:
            if isinstance(mask, Image.Image):
                mask = torch.from_numpy(read_image(mask, channels=1, name="the mask")[..., 0] >= 128)
            if not isinstance(mask, Tensor):
                raise ArgenError(f"a mask must be a PIL image or a tensor, got {type(mask).__name__}")
            parts.append(mask.reshape(-1, *mask.shape[-2:]) if mask.dim() >= 2 else mask)
        if len({tuple(part.shape[-2:]) for part in parts}) > 1:
            raise ArgenError("the masks differ in size: each mask must have its image's size")
        masks = torch.cat(parts)
    if not isinstance(masks, Tensor) or masks.dim() not in (2, 3, 4) or (masks.dim() == 4 and masks.shape[1] != 1):
        raise ArgenError("masks must be PIL images or bool tensors (H, W), (B, H, W) or (B, 1, H, W)")
    masks = masks.reshape(-1, *masks.shape[-2:])
    if masks.dtype != torch.bool:
        if masks.dtype.is_floating_point or bool(((masks != 0) & (masks != 1)).any()):
            raise ArgenError("a mask tensor must be bool (True = regenerate) or hold only 0 and 1")
        masks = masks != 0
    if tuple(masks.shape[-2:]) != (height, width):
        raise ArgenError(
            f"the mask is {masks.shape[-1]}×{masks.shape[-2]} (W×H) but the image is {width}×{height}: "
            "draw the mask at the image's size"
        )
    if masks.shape[0] == 1 and batch > 1:
        masks = masks.expand(batch, height, width)
    if masks.shape[0] != batch:
        raise ArgenError(f"got {masks.shape[0]} masks for {batch} images: give one per image, or one for all")
    return masks.contiguous()


def box_mask(height: int, width: int, box: Sequence[int]) -> Tensor:
    """bool (H, W), True inside the box (x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""
    if len(box) != 4:
        raise ArgenError(f"a box is x0,y0,x1,y1 (four integers), got {list(box)}")
    x0, y0, x1, y1 = (int(value) for value in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ArgenError(f"box {x0},{y0},{x1},{y1} is empty or leaves the {width}×{height} image: 0 ≤ x0 < x1 ≤ W")
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def known_cells(masks: Tensor, grid_shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """bool masks (B, H, W) → per grid, bool (B, h, w): True where the cell's pixel window has no masked pixel."""
    hidden = masks[:, None].float()
    return [F.adaptive_max_pool2d(hidden, (h, w))[:, 0] == 0 for h, w in grid_shapes]


def fill_masked(images: Tensor, masks: Tensor) -> Tensor:
    """Float images (B, C, H, W) with the masked pixels (B, H, W) replaced by a smooth continuation of the others.

    Push-pull filling: pull the known pixels down an image pyramid as weighted averages (pixel values premultiplied
    by a weight, 1 where known), then push back up, each level keeping what it knows and taking the rest from the
    upsampled coarser level. Unmasked pixels come back unchanged; a fully masked image becomes 0 (mid-grey).
    """
    weight = (~masks)[:, None].to(images.dtype)  # (B, 1, H, W)
    levels = [(images * weight, weight)]
    while max(levels[-1][1].shape[-2:]) > 1:
        value, known = levels[-1]
        levels.append((F.avg_pool2d(value, 2, ceil_mode=True), F.avg_pool2d(known, 2, ceil_mode=True)))
    value, known = levels[-1]
    filled = value / known.clamp_min(1e-6)
    for value, known in reversed(levels[:-1]):
        coarse = F.interpolate(filled, size=value.shape[-2:], mode="bilinear", align_corners=False)
        # value is premultiplied: a cell known to a fraction k keeps its own average and takes (1 - k) from above
        filled = value + (1 - known.clamp(0, 1)) * coarse
    return torch.where(masks[:, None], filled, images)


def paste(decoded: Tensor, originals: Tensor, masks: Tensor) -> Tensor:
    """uint8 (B, C, H, W): ``decoded`` inside the masks (B, H, W), ``originals`` exactly outside."""
    return torch.where(masks[:, None].to(decoded.device), decoded, originals.to(decoded.device))
