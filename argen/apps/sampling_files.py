"""Sampling a model to files: a grid with one row per label, a GIF of every step, an npz for external evaluators.

What `argen sample` writes, and what `argen demo` and `argen bench` draw their pictures with.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from argen.errors import ArgenError

if TYPE_CHECKING:
    from argen.pipeline import Pipeline, PipelineOutput


def sample_to_files(
    model: Pipeline | str | Path,
    *,
    labels: list[str] | None = None,
    per_label: int = 8,
    grid_path: str | Path | None = "samples.png",
    progress_path: str | Path | None = None,
    npz_path: str | Path | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    seed: int = 0,
    verbose: bool = True,
    compile: bool = False,
    precision: str = "fp32",
    **sampling,
) -> PipelineOutput:
    """``per_label`` images for each label (default every class) of ``model`` (a loaded pipeline, or a model
    directory loaded with ``device``, ``compile`` and ``precision``), a grid with one row per label, optionally a
    GIF of every step and an npz of the images. Batches use seeds seed, seed+1, ... so a seed and batch size
    reproduce the same files. ``verbose`` shows a progress bar and prints the speed and the paths written."""
    import torch

    from argen.data import image_grid, save_images_npz
    from argen.data.files import enlarged
    from argen.pipeline import Pipeline

    pipeline = (
        model
        if isinstance(model, Pipeline)
        else Pipeline.from_pretrained(model, device=device, compile=compile, precision=precision)
    )
    wanted = None
    if pipeline.model.config.num_classes > 0:
        chosen = [pipeline.class_index(label) for label in labels] if labels else list(range(len(pipeline.classes)))
        wanted = torch.tensor(chosen, dtype=torch.long).repeat_interleave(per_label)
    elif labels:
        raise ArgenError("this model is unconditional: drop --labels")
    total = len(wanted) if wanted is not None else per_label
    result = pipeline.generate_batched(
        wanted, num_images=total, batch_size=batch_size, seed=seed, progress=verbose,
        return_intermediates=progress_path is not None, **sampling,
    )  # fmt: skip
    if grid_path:
        # cells enlarged to ≥ 64 px (nearest): the npz keeps the images at their own size
        image_grid(enlarged(result.pixels), columns=per_label).save(grid_path)
    if progress_path:
        frames = [image_grid(enlarged(pixels), columns=per_label) for pixels in result.intermediate_pixels]
        durations = [250] * (len(frames) - 1) + [1500]  # hold the finished image
        frames[0].save(progress_path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    if npz_path:
        save_images_npz(npz_path, result.pixels, wanted)
    if verbose:
        print_summary(result, total, {"grid": grid_path, "progress GIF": progress_path, "npz": npz_path})
    return result


def print_summary(result: PipelineOutput, total: int, paths: dict[str, str | Path | None]) -> None:
    """The speed, the model calls per batch (per model, for collaborative decoding) and the files written."""
    split = ""
    if result.passes_by_model is not None:  # collaborative decoding: which model made the calls
        counts = ", ".join(f"{name} {count / result.batches:.0f}" for name, count in result.passes_by_model.items())
        split = f" ({counts})"
    print(
        f"{total} images in {result.seconds:.2f} s ({total / result.seconds:.1f} images/s), "
        f"{result.forward_passes / result.batches:.0f} forward passes per batch{split}"
    )
    for what, path in paths.items():
        if path:
            print(f"{what}: {path}")
