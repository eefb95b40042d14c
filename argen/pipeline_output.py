"""What `argen.Pipeline` returns: images, ids and counts of one batch, or of many batches joined into one."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image


@dataclass
class PipelineOutput:
    """images: PIL images; ids: one (B, h, w) grid per tokenizer grid; intermediates: per step, a list of PIL
    images decoded from what the steps so far produced (only with ``return_intermediates=True``)."""

    images: list[Image.Image]
    ids: list[torch.Tensor]
    labels: torch.Tensor | None
    forward_passes: int
    pixels: torch.Tensor  # uint8 (B, C, H, W)
    intermediates: list[list[Image.Image]] | None = None
    intermediate_pixels: list[torch.Tensor] | None = None  # per step, uint8 (B, C, H, W)
    passes_by_model: dict[str, int] | None = None  # collaborative: {"drafter": N, "refiner": S - N}
    batches: int = 1  # forward passes and passes_by_model are summed over this many batches
    seconds: float | None = None  # wall time of the sampling (model calls and decoding), for generate_batched


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """uint8 (B, C, H, W) → PIL images ("L" or "RGB")."""
    arrays = pixels.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array) for array in arrays]


def join_outputs(
    outputs: list[PipelineOutput], *, labels: torch.Tensor | None, seconds: float, intermediates: bool
) -> PipelineOutput:
    """The outputs of consecutive batches as one: images, ids and pixels concatenated, counts summed."""
    first = outputs[0]
    steps = range(len(first.intermediate_pixels)) if intermediates else range(0)
    step_pixels = [torch.cat([output.intermediate_pixels[step] for output in outputs]) for step in steps]
    return PipelineOutput(
        images=[image for output in outputs for image in output.images],
        ids=[torch.cat([output.ids[index] for output in outputs]) for index in range(len(first.ids))],
        labels=labels,
        forward_passes=sum(output.forward_passes for output in outputs),
        pixels=torch.cat([output.pixels for output in outputs]),
        intermediates=[to_pil(pixels) for pixels in step_pixels] if intermediates else None,
        intermediate_pixels=step_pixels if intermediates else None,
        passes_by_model=None if first.passes_by_model is None else {
            name: sum(output.passes_by_model[name] for output in outputs) for name in first.passes_by_model
        },
        batches=len(outputs),
        seconds=seconds,
    )  # fmt: skip


__all__ = ["PipelineOutput", "join_outputs", "to_pil"]
