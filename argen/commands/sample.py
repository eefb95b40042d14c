"""`argen sample`: images from a model directory as a grid, a step-by-step GIF and an npz."""

from __future__ import annotations

import argparse

from argen.commands.arguments import (
    add_per_label_arguments,
    add_sampler_arguments,
    add_sampling_arguments,
    add_speed_arguments,
    output_path,
    parse_labels,
    print_sampling_settings,
    sampler_options,
    sampling_arguments,
    speed_arguments,
)

NAME = "sample"
HELP = "generate images from a model directory: a grid, a progress GIF, an npz"
DESCRIPTION = "Generate --per-label images for each label and save them as one grid (a row per label)."
ORDER = 70


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory (argen train --out)")
    parser.add_argument("--labels", help="comma-separated class indices or names (default: every class)")
    add_per_label_arguments(parser, default=8, meaning="images per label (or in all, for unconditional models)")
    parser.add_argument("--out", default="samples.png", type=output_path("--out"), help="PNG grid to write")
    parser.add_argument("--progress", type=output_path("--progress"), help="GIF of the decoded images after every step")
    parser.add_argument(
        "--save-npz",
        type=output_path("--save-npz"),
        help="npz with `images` (uint8) and `labels`, for external evaluators",
    )
    parser.add_argument("--steer", action="append", default=[], metavar="SAE:FEATURE=DELTA",
                        help="add DELTA times an SAE feature's decoder direction at the SAE's hook point, at every "
                        "position (argen train-sae; repeatable; 0 gives the plain samples)")  # fmt: skip
    parser.add_argument(
        "--clamp",
        action="append",
        default=[],
        metavar="SAE:FEATURE=VALUE",
        help="set an SAE feature's activation to VALUE at every position (repeatable)",
    )
    add_sampling_arguments(parser)
    add_sampler_arguments(parser)
    add_speed_arguments(parser)


def run(arguments: argparse.Namespace) -> None:
    from argen.apps.sampling_files import sample_to_files
    from argen.interpret.steering import steering
    from argen.pipeline import Pipeline

    speed = speed_arguments(arguments)
    pipeline = Pipeline.from_pretrained(arguments.model, device=arguments.device, **speed)
    sampling = {**sampling_arguments(arguments), **sampler_options(arguments)}
    print_sampling_settings(pipeline, sampling)
    with steering(pipeline, steer=arguments.steer, clamp=arguments.clamp):
        sample_to_files(
            pipeline,
            labels=parse_labels(arguments.labels),
            per_label=arguments.per_label,
            **sampling,
            seed=arguments.seed,
            grid_path=arguments.out,
            progress_path=arguments.progress,
            npz_path=arguments.save_npz,
            batch_size=arguments.batch_size,
        )
