"""`argen tune`: sampling settings for one model, measured (argen.metrics.tuning), written to MODEL/sampling.json."""

from __future__ import annotations

import argparse

from argen.commands.arguments import NUM_HELP, add_data_arguments, evaluation_classifier, show_defaults

NAME = "tune"
HELP = "choose a model's sampling settings (guidance, schedule, top-k/top-p, temperature) by measuring FID"
DESCRIPTION = (
    "Sample the model under guidance 1, 1.5, 2, 3, then at the best of those with VAR's linear guidance ramp, top-k "
    "100, top-p 0.9 and temperature 0.9; score each by FID against held-out real images (--reference-split) in the "
    "classifier's features; keep the lowest FID among the settings whose class accuracy reaches 90 %% of what real "
    "held-out images get; write it, with every measurement, to MODEL/sampling.json (which sample, eval, serve and "
    "Pipeline then use by default)."
)
ORDER = 105


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory (argen train --out)")
    parser.add_argument(
        "--classifier", help="feature network: a train-classifier --out (default: the shipped one for --data)"
    )
    add_data_arguments(parser, shape=False)
    parser.add_argument("--num", type=int, default=2000, help=f"{NUM_HELP}: generated per setting")
    parser.add_argument(
        "--reference-split", choices=("train", "test"), default="test",
        help="real images FID compares to (held-out test images, so the choice is not fitted to eval's reference)",
    )  # fmt: skip
    parser.add_argument("--min-class-accuracy", type=float, help="the bar (default: 0.9 × real held-out images')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100, help="images generated per forward pass")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dry-run", action="store_true", help="measure and print, but leave sampling.json as it is")
    parser.add_argument("--no-progress", action="store_true")
    show_defaults(parser)


def run(arguments: argparse.Namespace) -> None:
    from argen.metrics.tuning import describe, tune_sampling

    classifier = evaluation_classifier(arguments)
    result = tune_sampling(
        arguments.model, classifier=classifier, data=arguments.data, num_images=arguments.num,
        reference_split=arguments.reference_split, data_dir=arguments.data_dir,
        min_class_accuracy=arguments.min_class_accuracy, seed=arguments.seed, batch_size=arguments.batch_size,
        device=arguments.device, write=not arguments.dry_run, progress=not arguments.no_progress,
    )  # fmt: skip
    for score in result["scores"]:
        accuracy = f"  class accuracy {score['class_accuracy']:.3f}" if "class_accuracy" in score else ""
        print(f"{describe(score):<32} FID {score['fid']:.4f}{accuracy}")
    where = "not written (--dry-run)" if arguments.dry_run else f"written to {arguments.model}/sampling.json"
    print(f"recommended: {describe(result['recommended'])}; {where}")
