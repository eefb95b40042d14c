"""`argen sample`: images from a model directory as a grid, a step-by-step GIF and an npz."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from argen.commands.arguments import (
    add_per_label_arguments,
    add_sampler_arguments,
    add_sampling_arguments,
    add_speed_arguments,
    parse_labels,
    print_sampling_settings,
    sampler_options,
    sampling_arguments,
    speed_arguments,
)
from argen.errors import ArgenError

if TYPE_CHECKING:
    from argen.pipeline import PipelineOutput

NAME = "sample"
HELP = "generate images from a model directory: a grid, a progress GIF, an npz"
DESCRIPTION = "Generate --per-label images for each label and save them as one grid (a row per label)."
ORDER = 70


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory (argen train --out)")
    parser.add_argument("--labels", help="comma-separated class indices or names (default: every class)")
    add_per_label_arguments(parser, default=8, meaning="images per label (or in all, for unconditional models)")
    parser.add_argument("--out", default="samples.png", help="PNG grid to write")
    parser.add_argument("--progress", help="GIF of the decoded images after every step")
    parser.add_argument("--save-npz", help="npz with `images` (uint8) and `labels`, for external evaluators")
    add_sampling_arguments(parser)
    add_sampler_arguments(parser)
    add_speed_arguments(parser)


def run(arguments: argparse.Namespace) -> None:
    sample_to_files(
        arguments.model,
        labels=parse_labels(arguments.labels),
        per_label=arguments.per_label,
        **sampling_arguments(arguments),
        seed=arguments.seed,
        **sampler_options(arguments),
        grid_path=arguments.out,
        progress_path=arguments.progress,
        npz_path=arguments.save_npz,
        batch_size=arguments.batch_size,
        device=arguments.device,
        **speed_arguments(arguments),
    )


def sample_to_files(
    model_directory: str | Path,
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
    """What `argen sample` does: ``per_label`` images for each label (default every class), a grid with one row per
    label, optionally a GIF of every step and an npz of the images. Batches use seeds seed, seed+1, ... so a seed
    and batch size reproduce the same files."""
    import torch

    from argen.data import image_grid, save_images_npz
    from argen.pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(model_directory, device=device, compile=compile, precision=precision)
    wanted = None
    if pipeline.model.config.num_classes > 0:
        chosen = [pipeline.class_index(label) for label in labels] if labels else list(range(len(pipeline.classes)))
        wanted = torch.tensor(chosen, dtype=torch.long).repeat_interleave(per_label)
    elif labels:
        raise ArgenError("this model is unconditional: drop --labels")
    total = len(wanted) if wanted is not None else per_label
    if verbose:
        print_sampling_settings(pipeline, sampling)
    result = pipeline.generate_batched(
        wanted, num_images=total, batch_size=batch_size, seed=seed, progress=verbose,
        return_intermediates=progress_path is not None, **sampling,
    )  # fmt: skip
    if grid_path:
        image_grid(result.pixels, columns=per_label).save(grid_path)
    if progress_path:
        frames = [image_grid(pixels, columns=per_label) for pixels in result.intermediate_pixels]
        durations = [250] * (len(frames) - 1) + [1500]  # hold the finished image
        frames[0].save(progress_path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    if npz_path:
        save_images_npz(npz_path, result.pixels, wanted)
    if verbose:
        split = ""
        if result.passes_by_model is not None:  # collaborative decoding: which model made the calls
            counts = ", ".join(f"{name} {count / result.batches:.0f}" for name, count in result.passes_by_model.items())
            split = f" ({counts})"
        print(
            f"{total} images in {result.seconds:.2f} s ({total / result.seconds:.1f} images/s), "
            f"{result.forward_passes / result.batches:.0f} forward passes per batch{split}"
        )
        for path, what in ((grid_path, "grid"), (progress_path, "progress GIF"), (npz_path, "npz")):
            if path:
                print(f"{what}: {path}")
    return result
