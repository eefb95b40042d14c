"""Inpainting, outpainting and class editing for every order: teacher-forced decoding of the tokens that are known.

VAR ("Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction", Tian et al., arXiv
2404.02905) edits zero-shot, without any training for it: in its in-/out-painting and class-conditional editing
experiments the ground-truth tokens outside the mask are teacher-forced and the model generates only the tokens
inside it. This module does that for every order, through the order contract alone (``step_inputs``, ``logits``,
``scatter``), so a new order gets editing for free.

What is known. The image is encoded; a token is *known* when its grid cell's window of the image holds no masked
pixel (the adaptive-pooling window of cell (r, c) of an h×w grid over an H×W image, rows ⌊rH/h⌋ to ⌈(r+1)H/h⌉):
"fully outside the mask after area-downsampling". A cell that is only partly outside would carry what the mask
hides back into the result (an object to remove, the answer of an inpainting benchmark), so it is regenerated. On
a coarse grid (VAR's 1×1 scale, NFIG's lowest band) almost no cell is fully outside a large mask, so the coarse
steps are sampled and the fine ones mostly forced: at each scale or band the known region's tokens are the image's
own, VAR's rule. Known tokens are written into the grids after every step (the model's draw for them is thrown
away), so later steps are conditioned on them, and they are never changed.

Which tokens are "the image's own" (``known_tokens``). "encoded" forces the tokens ``tokenizer.encode`` gives, as
VAR does. But a residual tokenizer's fine token is the residual left by the image's *own* coarse tokens; once the
coarse cells over the hole are regenerated, those residuals no longer add up to the image, the decoded known
region drifts from the input, and the mask's edge shows a seam (1.9-3.2× the real images' gradient energy on the
shipped Fashion-MNIST models). "requantized", the default for coarse-to-fine orders on residual tokenizers (VAR's
multiscale, NFIG's bands), runs the tokenizer's encoding step during decoding instead: at step s a known cell gets
the code nearest to what the image's latent still holds beyond the grids composed so far (regenerated coarse cells
included), so the known region's latent keeps following the image (the seam falls to 1.2-2.0×; bench/editing.py).
Single-grid orders (raster, neighbor) have one grid and no residuals: their known tokens are the encoded ones.

What the encoder sees. With ``fill="smooth"`` (the default) the masked pixels are replaced, before encoding, by a
smooth continuation of the pixels around them (push-pull filling: a weighted image pyramid pulled down and pushed
back up), so nothing under the mask reaches the known tokens through the encoder's receptive field, and the known
tokens next to the hole see no hard edge. ``fill="keep"`` encodes the image as given.

Class editing. ``keep_steps`` K forces *every* token of the first K steps (the first K scales of VAR, the K lowest
bands of NFIG: "keep the silhouette, change the detail"; the first K tokens or anti-diagonals of raster and
neighbor) from the image as given, and samples the rest under ``labels``; the mask then still forces the cells
outside it at the later steps (all-True, or None, regenerates everything after K). K = 0 with an all-True mask is
plain class-conditional generation, draw for draw: every step samples all its targets from the same random stream
as `argen.samplers.ar.generate`, so the same seed gives the same images. K = all steps is the reconstruction.

What a causal order cannot see. A token is sampled from what the steps before it produced: known tokens *after*
it in the order are invisible to it. Raster order fills the right half of row r before it sees the left half of
row r + 1, and the bottom edge of a centre hole before it sees the rows below; next-neighbor (anti-diagonals) sees
only the known cells above and left of each one; coarse-to-fine orders sample a coarse cell over the hole without
the fine known tokens around it (they come at later steps), and no cell of a step sees the known tokens of its own
step. The sampled region then agrees with what came before it and ignores what comes after, which shows as a seam
at the hole's lower and right edges (raster, neighbor) or as coarse content that the known detail contradicts.

The remedy tried here: ``particles`` P > 1 runs sequential Monte Carlo ("Sequential Monte Carlo Steering of Large
Language Models using Probabilistic Programs", Lew et al., arXiv 2306.03081, whose infilling task is this one). Each
image gets P decodings ("particles"); each forced token multiplies its particle's weight by the probability the model
gave it, w ← w · p(x_known | prefix), which is exactly how much the model "agrees" with the known token that follows
what the particle sampled; when the effective sample size of an image's particles falls below P / 2 they are resampled
in proportion to their weights (the KV cache rows follow), and at the end one particle per image is drawn by weight.
As P grows this samples p(inside | outside) under the model, which a single forced decoding does not. It costs P
times the batch; P = 1 is plain forced decoding. bench/editing.py measures it.

Legend: B batch, C channels, H/W image size, V vocabulary, S steps, T_s targets of step s, h/w grid, P particles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from argen.data import float_to_images, images_to_float
from argen.data.folder import convert_mode
from argen.errors import ArgenError
from argen.orders.base import Order, StepInputs
from argen.samplers.base import evaluation, feed, prepare_request, step_logits
from argen.samplers.logits import sample

FILLS = ("smooth", "keep")
KNOWN_TOKENS = ("requantized", "encoded")


@dataclass
class EditOutput:
    """ids: one (B, h, w) grid per tokenizer grid; known: the same shapes, True where a token was forced from the
    image; forward_passes: model calls made for the batch."""

    ids: list[Tensor]
    known: list[Tensor]
    forward_passes: int


@dataclass
class EditResult:
    """What `edit_images` returns: B = images × num; pixels uint8 (B, C, H, W); masks (B, H, W) bool, True where
    regenerated; intermediate_pixels, per step, uint8 (B, C, H, W) (only when asked)."""

    ids: list[Tensor]
    known: list[Tensor]
    pixels: Tensor
    masks: Tensor
    labels: Tensor | None
    forward_passes: int
    intermediate_pixels: list[Tensor] | None = None


# -- inputs ------------------------------------------------------------------------------------------------------


def as_images(images: Any, *, channels: int) -> Tensor:
    """PIL image(s) or a uint8 tensor (B, C, H, W) / (C, H, W) → uint8 (B, C, H, W) with ``channels`` channels."""
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, Tensor):
        tensor = images if images.dim() == 4 else images.unsqueeze(0)
        if tensor.dtype != torch.uint8 or tensor.dim() != 4:
            shape = tuple(images.shape)
            raise ArgenError(f"images must be uint8 (B, C, H, W) tensors or PIL images, got {tensor.dtype} {shape}")
        if tensor.shape[1] != channels:
            raise ArgenError(f"the images have {tensor.shape[1]} channels and the model {channels}: convert them")
        return tensor
    if not isinstance(images, (list, tuple)) or not images:
        raise ArgenError("pass images as a PIL image, a list of them, or a uint8 (B, C, H, W) tensor")
    if all(isinstance(image, Tensor) for image in images):
        return torch.cat([as_images(image, channels=channels) for image in images])
    mode = "RGB" if channels == 3 else "L"
    arrays = []
    for image in images:
        if not isinstance(image, Image.Image):
            raise ArgenError(f"expected PIL images, got {type(image).__name__}")
        array = np.asarray(convert_mode(image, mode))
        arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    if len({array.shape for array in arrays}) > 1:
        raise ArgenError("the images differ in size: edit images of one size together")
    return torch.from_numpy(np.stack(arrays)).contiguous()


def as_masks(masks: Any, *, batch: int, height: int, width: int) -> Tensor:
    """Masks → bool (B, H, W), True = regenerate. Accepts None (everything), PIL images (white, ≥ 128 in "L",
    regenerates), bool or 0/1 tensors (H, W) / (B, H, W) / (B, 1, H, W), or a list of those; one mask serves
    every image."""
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
                mask = torch.from_numpy(np.asarray(convert_mode(mask, "L")) >= 128)
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


# -- known cells, filling, paste-back -----------------------------------------------------------------------------


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


# -- the sampler --------------------------------------------------------------------------------------------------


def step_cells(order: Order, tokenizer: Any, step: int) -> Tensor:
    """Indices of step ``step``'s targets into the concatenated flattened grids (T_s,)."""
    layout = order.layout(tokenizer.grid_shapes)
    return layout.target_flat[layout.targets_of_step[step]]


def flatten(grids: list[Tensor]) -> Tensor:
    return torch.cat([grid.flatten(1) for grid in grids], dim=1)


def unflatten(flat: Tensor, grid_shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    sizes = [h * w for h, w in grid_shapes]
    return [part.reshape(-1, h, w) for part, (h, w) in zip(flat.split(sizes, dim=1), grid_shapes)]


def reorder_cache(cache: Any, rows: Tensor) -> None:
    """Make row i of the KV cache's batch the old row ``rows[i]`` (particles after resampling)."""
    cache.keys = cache.keys[:, rows]
    cache.values = cache.values[:, rows]


@torch.no_grad()
def generate_edit(
    model: Any,
    order: Order,
    tokenizer: Any,
    *,
    image_ids: list[Tensor],
    known: list[Tensor],
    labels: Tensor | None = None,
    cfg_scale: float = 1.0,
    cfg_schedule: str = "constant",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    particles: int = 1,
    generator: torch.Generator | None = None,
    callback: Callable[[int, list[Tensor]], None] | None = None,
    refresh: Callable[[int, list[Tensor]], Tensor | None] | None = None,
) -> EditOutput:
    """Decode along ``order``'s schedule with the ``known`` tokens forced to ``image_ids``.

    Args:
        image_ids: one (B, h, w) grid per tokenizer grid, the tokens to force (read only where ``known``).
        known: bool, the same shapes: which tokens are forced.
        labels: (B,) classes, or None (the null class of a conditional model; an unconditional model needs None).
        cfg_scale, cfg_schedule, temperature, top_k, top_p, generator: as `argen.samplers.ar.generate`.
        particles: P decodings per image, weighted by the probability of their forced tokens and resampled
            (sequential Monte Carlo, see the module docstring); 1 is plain forced decoding.
        callback: ``callback(step, ids)`` after each step, ids of the first particle of each image.
        refresh: ``refresh(step, ids)`` → (B·P, T_s) ids to force at this step instead of ``image_ids`` (read where
            ``known``), computed from the grids so far, or None to keep ``image_ids`` (see `requantizer`).
    """
    if particles < 1:
        raise ArgenError(f"particles must be 1 (plain forced decoding) or more, got {particles}")
    batch = image_ids[0].shape[0]
    if labels is not None and labels.dim() == 1 and labels.shape[0] == batch:
        labels = labels.repeat_interleave(particles)
    request = prepare_request(
        model, order, tokenizer, labels=labels, batch_size=batch * particles, cfg_scale=cfg_scale,
        cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
    )  # fmt: skip
    layout, device = request.layout, request.device
    if particles > 1:
        request.inputs = StepInputs(order, tokenizer)  # resampling reorders the grids under a running latent
    forced = flatten([grid.to(device) for grid in known]).repeat_interleave(particles, dim=0)  # (B·P, N)
    forced_ids = flatten([grid.to(device) for grid in image_ids]).repeat_interleave(particles, dim=0)
    log_weights = torch.zeros(batch, particles, device=device)
    ids = request.empty_ids()
    cache = model.new_cache(request.rows, capacity=layout.length)
    with evaluation(model):
        for step in range(layout.num_steps):
            outputs = feed(model, order, tokenizer, request, ids, first=step, last=step, cache=cache)
            outputs = outputs[:, -len(layout.inputs_of_step[step]) :]  # this step's positions
            logits = step_logits(order, request, outputs, step)  # (B·P, T_s, V), guided
            # Every target is drawn, forced or not, so that the random stream is the one of plain decoding.
            sampled = sample(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            where = step_cells(order, tokenizer, step).to(device)
            forced_here, forced_values = forced[:, where], forced_ids[:, where]  # (B·P, T_s)
            refreshed = refresh(step, ids) if refresh is not None else None
            if refreshed is not None:
                forced_values = torch.where(forced_here, refreshed, forced_values)
            if particles > 1 and bool(forced_here.any()):
                # The weight is the sampling distribution's probability of the forced token, before top-k/top-p
                # (which may exclude it) so that no particle's weight becomes zero.
                log_probs = (logits.float() / (temperature or 1.0)).log_softmax(-1)
                gained = log_probs.gather(-1, forced_values[..., None])[..., 0]
                gained = torch.where(forced_here, gained, torch.zeros_like(gained))
                log_weights += gained.sum(1).view(batch, particles)
            sampled = torch.where(forced_here, forced_values, sampled)
            ids = order.scatter(ids, step, sampled)
            if particles > 1:
                ids, log_weights = resample(ids, log_weights, cache, generator=generator, guided=request.guided)
            if callback is not None:
                callback(step, [grid[::particles] for grid in ids])
    if particles > 1:
        chosen = draw(log_weights, 1, generator=generator)[:, 0]  # (B,) one particle per image
        rows_kept = torch.arange(batch, device=device) * particles + chosen
        ids = [grid[rows_kept] for grid in ids]
    return EditOutput(ids=ids, known=[grid.bool() for grid in known], forward_passes=layout.num_steps)


def draw(log_weights: Tensor, count: int, *, generator: torch.Generator | None) -> Tensor:
    """(B, P) log weights → (B, count) particle indices drawn in proportion to the weights."""
    probs = (log_weights - log_weights.max(1, keepdim=True).values).exp()
    return torch.multinomial(probs, count, replacement=True, generator=generator)


def resample(
    ids: list[Tensor], log_weights: Tensor, cache: Any, *, generator: torch.Generator | None, guided: bool
) -> tuple[list[Tensor], Tensor]:
    """Resample the particles of every image whose effective sample size fell below P / 2; their weights reset."""
    batch, particles = log_weights.shape
    weights = (log_weights - log_weights.logsumexp(1, keepdim=True)).exp()
    degenerate = 1.0 / weights.square().sum(1) < particles / 2  # (B,)
    if not bool(degenerate.any()):
        return ids, log_weights
    device = log_weights.device
    source = torch.arange(particles, device=device).expand(batch, particles).clone()
    source[degenerate] = draw(log_weights[degenerate], particles, generator=generator)
    rows = (torch.arange(batch, device=device)[:, None] * particles + source).flatten()  # (B·P,)
    reorder_cache(cache, torch.cat([rows, rows + batch * particles]) if guided else rows)
    log_weights = torch.where(degenerate[:, None], torch.zeros_like(log_weights), log_weights)
    return [grid[rows] for grid in ids], log_weights


def can_requantize(order: Order, tokenizer: Any) -> bool:
    """Whether known tokens can be re-quantized step by step: one grid per step (coarse-to-fine orders) over a
    residual quantizer (VAR's multiscale, NFIG's frequency bands)."""
    from argen.orders.scale import CoarseToFineOrder

    quantizer = getattr(tokenizer, "quantizer", None)
    return (
        isinstance(order, CoarseToFineOrder)
        and hasattr(tokenizer, "encoder")
        and all(hasattr(quantizer, name) for name in ("targets", "target", "codebook"))
    )


def requantizer(tokenizer: Any, latent: Tensor, *, first_step: int = 0) -> Callable[[int, list[Tensor]], Tensor | None]:
    """``refresh`` for `generate_edit`: at step s ≥ ``first_step``, the tokens that quantize what the image's
    ``latent`` (B, D, n, n) still holds beyond the grids composed so far (VAR's encoding step, run against the
    partly regenerated composition), (rows, h_s·w_s); rows may be B times a number of particles."""
    quantizer = tokenizer.quantizer
    prepared: dict[int, Any] = {}

    def refresh(step: int, ids: list[Tensor]) -> Tensor | None:
        if step < first_step:
            return None
        rows = ids[0].shape[0]
        if rows not in prepared:  # particles of one image share its latent, resampling keeps them together
            prepared.clear()
            prepared[rows] = quantizer.targets(latent.repeat_interleave(rows // latent.shape[0], dim=0))
        target = quantizer.target(prepared[rows], tokenizer.compose(ids, step), step)  # (rows, D, n, n)
        h, w = tokenizer.grid_shapes[step]
        if tuple(target.shape[-2:]) != (h, w):
            target = F.interpolate(target, size=(h, w), mode="area")
        return quantizer.codebook.nearest(target.permute(0, 2, 3, 1).reshape(-1, target.shape[1])).view(rows, h * w)

    return refresh


# -- the whole edit: images in, images out ----------------------------------------------------------------------


@torch.no_grad()
def edit_images(
    model: Any,
    order: Order,
    tokenizer: Any,
    images: Tensor,
    masks: Tensor,
    labels: Tensor | None,
    *,
    keep_steps: int | None = None,
    paste_back: bool = True,
    fill: str = "smooth",
    known_tokens: str | None = None,
    num: int = 1,
    particles: int = 1,
    cfg_scale: float = 1.0,
    cfg_schedule: str = "constant",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    return_intermediates: bool = False,
) -> EditResult:
    """Edit uint8 ``images`` (B, C, H, W) inside bool ``masks`` (B, H, W) (True = regenerate) under ``labels`` (B,).

    Encodes the images, forces the known tokens (cells fully outside the mask, and every token of the first
    ``keep_steps`` steps), samples the rest with `generate_edit`, decodes, and with ``paste_back`` copies the pixels
    outside the mask exactly from the input. ``num`` edits per image (image-major: image 0's ``num`` first).

    ``known_tokens``: "encoded" forces the tokens the image encodes to (VAR's rule); "requantized" (the default
    where `can_requantize`) re-quantizes each known cell of steps ≥ ``keep_steps`` from the image's latent against
    the grids composed so far, so that the known region's latent follows the image although coarse cells over the
    hole were regenerated (without it the fine known tokens are residuals of coarse tokens that are no longer there,
    and the decoded known region drifts from the image, which shows as a seam at the mask's edge).
    """
    layout = order.layout(tokenizer.grid_shapes)
    config = getattr(tokenizer, "config", None)
    size = getattr(config, "image_size", None)
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        raise ArgenError(
            f"the image is {images.shape[-1]}×{images.shape[-2]} but this model works on {size}×{size} images: "
            "resize it first"
        )
    if tuple(masks.shape) != (images.shape[0], *images.shape[-2:]):
        raise ArgenError(f"masks {tuple(masks.shape)} do not fit images {tuple(images.shape)}: one (H, W) per image")
    if fill not in FILLS:
        raise ArgenError(f"unknown fill {fill!r}: choose one of {', '.join(FILLS)}")
    requantizable = can_requantize(order, tokenizer)
    known_tokens = known_tokens or ("requantized" if requantizable else "encoded")
    if known_tokens not in KNOWN_TOKENS:
        raise ArgenError(f"unknown known_tokens {known_tokens!r}: choose one of {', '.join(KNOWN_TOKENS)}")
    if known_tokens == "requantized" and not requantizable:
        raise ArgenError(
            f"known_tokens='requantized' needs a coarse-to-fine order on a residual tokenizer, not {order.name!r}: "
            "use 'encoded'"
        )
    keep_steps = 0 if keep_steps is None else int(keep_steps)
    if not 0 <= keep_steps <= layout.num_steps:
        raise ArgenError(f"keep_steps must lie in [0, {layout.num_steps}] (this order has {layout.num_steps} steps)")
    if num < 1:
        raise ArgenError(f"num must be at least 1, got {num}")
    batch = images.shape[0]
    if labels is not None:
        labels = labels.reshape(-1).long()
        if labels.numel() == 1 and batch > 1:
            labels = labels.expand(batch)
        if labels.numel() != batch:
            raise ArgenError(f"got {labels.numel()} labels for {batch} images: give one per image, or one for all")
    device = next(model.parameters()).device
    images, masks = images.to(device), masks.to(device)

    pixels = images_to_float(images)
    outside = known_cells(masks, layout.grid_shapes)
    any_outside = any(bool(grid.any()) for grid in outside)
    # What the encoder sees for the cells outside the mask: nothing of what lies under it, with the smooth fill.
    seen = fill_masked(pixels, masks) if fill == "smooth" and any_outside else pixels
    whole = tokenizer.encode(pixels) if keep_steps > 0 else None
    if any_outside:
        hidden = whole if whole is not None and seen is pixels else tokenizer.encode(seen)
    else:
        hidden = [torch.zeros_like(grid, dtype=torch.long) for grid in outside]  # never read
    kept = torch.zeros(sum(h * w for h, w in layout.grid_shapes), dtype=torch.bool, device=device)
    for step in range(keep_steps):
        kept[step_cells(order, tokenizer, step).to(device)] = True
    forced = flatten(outside) | kept  # (B, N)
    forced_ids = torch.where(kept, flatten(whole), flatten(hidden)) if whole is not None else flatten(hidden)
    refresh = None
    if known_tokens == "requantized" and any_outside:
        refresh = requantizer(tokenizer, tokenizer.encoder(seen).repeat_interleave(num, dim=0), first_step=keep_steps)

    def repeat(tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else tensor.repeat_interleave(num, dim=0)

    images, masks, labels = repeat(images), repeat(masks), repeat(labels)
    steps: list[Tensor] = []

    def keep_step(step: int, ids: list[Tensor]) -> None:
        preview = float_to_images(order.preview(ids, step + 1, tokenizer))
        steps.append(paste(preview, images, masks) if paste_back else preview)

    shapes = layout.grid_shapes
    result = generate_edit(
        model, order, tokenizer,
        image_ids=unflatten(repeat(forced_ids), shapes), known=unflatten(repeat(forced), shapes),
        labels=labels, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k,
        top_p=top_p, particles=particles, generator=generator, callback=keep_step if return_intermediates else None,
        refresh=refresh,
    )  # fmt: skip
    decoded = float_to_images(tokenizer.decode(result.ids))
    return EditResult(
        ids=result.ids,
        known=result.known,
        pixels=paste(decoded, images, masks) if paste_back else decoded,
        masks=masks,
        labels=labels,
        forward_passes=result.forward_passes,
        intermediate_pixels=steps if return_intermediates else None,
    )
