"""Inpainting, outpainting and class editing for every order: images in, images out (what `Pipeline.edit` runs).

VAR ("Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction", Tian et al., arXiv
2404.02905) edits zero-shot, without any training for it: in its in-/out-painting and class-conditional editing
experiments the ground-truth tokens outside the mask are teacher-forced and the model generates only the tokens
inside it. This module does that for every order: it reads the images and masks (`argen.data.images`,
`argen.data.masks`), encodes, decides which tokens are known, and decodes with `argen.samplers.forced`, which goes
through the order contract alone (``step_inputs``, ``logits``, ``scatter``), so a new order gets editing for free.

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

The remedy tried here: ``particles`` P > 1 runs sequential Monte Carlo (`argen.samplers.forced`, after Lew et al.,
arXiv 2306.03081): P decodings per image weighted by how well they agree with the known tokens that follow what they
sampled, resampled as they go; as P grows this samples p(inside | outside) under the model. It costs P times the
batch; P = 1 is plain forced decoding. bench/editing.py measures it.

Legend: B batch, C channels, H/W image size, V vocabulary, S steps, T_s targets of step s, h/w grid, P particles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from argen.data import float_to_images, images_to_float
from argen.data.images import as_images
from argen.data.masks import MaskSource, as_masks, fill_masked, known_cells, paste
from argen.errors import ArgenError
from argen.model import Transformer, autocast
from argen.orders.base import Order
from argen.pipeline import Pipeline, PipelineOutput, to_pil
from argen.samplers.forced import can_requantize, flatten, generate_forced, requantizer, step_cells, unflatten
from argen.tokenizers.autoencoder import Tokenizer

FILLS = ("smooth", "keep")
KNOWN_TOKENS = ("requantized", "encoded")

ImageInput = Tensor | Image.Image | Sequence[Image.Image | Tensor]
LabelInput = Tensor | int | str | Sequence[int | str] | None


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


@torch.no_grad()
def edit(
    pipeline: Pipeline,
    images: ImageInput,
    masks: MaskSource,
    labels: LabelInput,
    *,
    keep_steps: int | None = None,
    paste_back: bool = True,
    cfg_scale: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    return_intermediates: bool = False,
    num: int = 1,
    **options,
) -> PipelineOutput:
    """`Pipeline.edit`: read the images and masks, resolve labels and the model's recommended sampling settings,
    seed, and run `edit_images` under the pipeline's precision."""
    pixels = as_images(images, channels=pipeline.tokenizer.config.channels)
    masks = as_masks(masks, batch=pixels.shape[0], height=pixels.shape[-2], width=pixels.shape[-1])
    if labels is not None and not isinstance(labels, Tensor):
        listed = labels if isinstance(labels, (list, tuple)) else [labels]
        labels = torch.tensor([pipeline.class_index(label) for label in listed], dtype=torch.long)
    settings = pipeline.sampling_settings(
        cfg_scale=cfg_scale, cfg_schedule=options.pop("cfg_schedule", None), temperature=temperature,
        top_k=top_k, top_p=top_p,
    )  # fmt: skip
    generator = torch.Generator(device=pipeline.device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    with autocast(pipeline.precision, pipeline.device):
        result = edit_images(
            pipeline.model, pipeline.order, pipeline.tokenizer, pixels, masks, labels, keep_steps=keep_steps,
            paste_back=paste_back, num=num, **settings, generator=generator,
            return_intermediates=return_intermediates, **options,
        )  # fmt: skip
    steps = result.intermediate_pixels
    return PipelineOutput(
        images=to_pil(result.pixels), ids=result.ids, labels=result.labels, forward_passes=result.forward_passes,
        pixels=result.pixels, intermediates=[to_pil(step) for step in steps] if steps is not None else None,
        intermediate_pixels=steps,
    )  # fmt: skip


def check_edit(
    order: Order,
    tokenizer: Tokenizer,
    images: Tensor,
    masks: Tensor,
    labels: Tensor | None,
    *,
    keep_steps: int | None,
    fill: str,
    known_tokens: str | None,
    num: int,
) -> tuple[int, str, Tensor | None]:
    """Refuse what does not fit (one-line `ArgenError`s); returns keep_steps, known_tokens and labels (B,) resolved."""
    num_steps = order.layout(tokenizer.grid_shapes).num_steps
    size = getattr(getattr(tokenizer, "config", None), "image_size", None)
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
    if not 0 <= keep_steps <= num_steps:
        raise ArgenError(f"keep_steps must lie in [0, {num_steps}] (this order has {num_steps} steps)")
    if num < 1:
        raise ArgenError(f"num must be at least 1, got {num}")
    batch = images.shape[0]
    if labels is not None:
        labels = labels.reshape(-1).long()
        if labels.numel() == 1 and batch > 1:
            labels = labels.expand(batch)
        if labels.numel() != batch:
            raise ArgenError(f"got {labels.numel()} labels for {batch} images: give one per image, or one for all")
    return keep_steps, known_tokens, labels


@torch.no_grad()
def edit_images(
    model: Transformer,
    order: Order,
    tokenizer: Tokenizer,
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
    ``keep_steps`` steps), samples the rest with `generate_forced`, decodes, and with ``paste_back`` copies the pixels
    outside the mask exactly from the input. ``num`` edits per image (image-major: image 0's ``num`` first).

    ``known_tokens``: "encoded" forces the tokens the image encodes to (VAR's rule); "requantized" (the default
    where `can_requantize`) re-quantizes each known cell of steps ≥ ``keep_steps`` from the image's latent against
    the grids composed so far, so that the known region's latent follows the image although coarse cells over the
    hole were regenerated (without it the fine known tokens are residuals of coarse tokens that are no longer there,
    and the decoded known region drifts from the image, which shows as a seam at the mask's edge).
    """
    keep_steps, known_tokens, labels = check_edit(
        order, tokenizer, images, masks, labels, keep_steps=keep_steps, fill=fill, known_tokens=known_tokens, num=num
    )
    layout = order.layout(tokenizer.grid_shapes)
    device = next(model.parameters()).device
    images, masks = images.to(device), masks.to(device)
    forced, forced_ids, seen = known_tokens_of(order, tokenizer, images, masks, keep_steps=keep_steps, fill=fill)
    refresh = None
    if known_tokens == "requantized" and seen is not None:
        refresh = requantizer(tokenizer, tokenizer.encoder(seen).repeat_interleave(num, dim=0), first_step=keep_steps)

    def repeat(tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else tensor.repeat_interleave(num, dim=0)

    images, masks, labels = repeat(images), repeat(masks), repeat(labels)
    steps: list[Tensor] = []

    def keep_step(step: int, ids: list[Tensor]) -> None:
        preview = float_to_images(order.preview(ids, step + 1, tokenizer))
        steps.append(paste(preview, images, masks) if paste_back else preview)

    shapes = layout.grid_shapes
    result = generate_forced(
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


def known_tokens_of(
    order: Order, tokenizer: Tokenizer, images: Tensor, masks: Tensor, *, keep_steps: int, fill: str
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Which tokens to force and their encoded values, both (B, N), and the float images (B, C, H, W) the encoder saw
    for the cells outside the mask (None when no cell lies fully outside it)."""
    layout = order.layout(tokenizer.grid_shapes)
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
    kept = torch.zeros(sum(h * w for h, w in layout.grid_shapes), dtype=torch.bool, device=images.device)
    for step in range(keep_steps):
        kept[step_cells(order, tokenizer, step).to(images.device)] = True
    forced = flatten(outside) | kept  # (B, N)
    forced_ids = torch.where(kept, flatten(whole), flatten(hidden)) if whole is not None else flatten(hidden)
    return forced, forced_ids, seen if any_outside else None
