"""`argen eval`: FID, KID, IS, precision/recall, class accuracy and speed of a generator, offline."""

from __future__ import annotations

import argparse

from argen.commands.arguments import (
    NUM_HELP,
    add_data_arguments,
    add_sampler_arguments,
    add_sampling_arguments,
    add_speed_arguments,
    evaluation_classifier,
    output_path,
    sampler_options,
    sampling_arguments,
    speed_arguments,
)

NAME = "eval"
HELP = "FID, KID, IS, precision/recall, class accuracy and speed of a generator, offline"
DESCRIPTION = (
    "Generate --num images (classes balanced) with a model directory, or read them from an npz, or take a real "
    "split as the baseline; score them with a classifier's features against the --data reference split; print a "
    "table and optionally write JSON."
)
ORDER = 110


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model directory to sample from (argen train --out)")
    source.add_argument("--samples", help="npz of uint8 images (and labels), e.g. from `argen sample --save-npz`")
    source.add_argument(
        "--real", choices=("train", "test"), help="score a real split instead: the floor a perfect generator reaches"
    )
    parser.add_argument(
        "--classifier", help="feature network: a train-classifier --out (default: the shipped one for --data)"
    )
    parser.add_argument("--num", type=int, default=10000, help=f"{NUM_HELP}: generated (or taken from --real)")
    parser.add_argument(
        "--reference-split", choices=("train", "test"), default="train", help="real images the metrics compare to"
    )
    add_data_arguments(parser, shape=False)  # the classifier fixes size and channels
    parser.add_argument("--json", type=output_path("--json"), help="also write the results to this JSON file")
    parser.add_argument(
        "--save-npz", type=output_path("--save-npz"), help="also save the scored images (uint8) and labels to this npz"
    )
    parser.add_argument(
        "--inception-weights",
        metavar="PTH",
        help="also compute the papers' Inception-FID from this local torch-fidelity weights file (needs "
        "torch-fidelity and a matching torchvision; slow on a CPU: every image is resized to 299×299)",
    )
    parser.add_argument("--no-progress", action="store_true")
    add_sampling_arguments(parser)
    add_sampler_arguments(parser)
    add_speed_arguments(parser)
    parser.set_defaults(batch_size=100)


def run(arguments: argparse.Namespace) -> None:
    from argen.metrics.evaluate import evaluate_generator

    classifier = evaluation_classifier(arguments)
    sampling = {}
    if arguments.model is not None:
        sampling = dict(
            **sampling_arguments(arguments), **sampler_options(arguments),
        )  # fmt: skip
    results = evaluate_generator(
        classifier=classifier,
        data=arguments.data,
        model=arguments.model,
        samples=arguments.samples,
        real=arguments.real,
        num_images=arguments.num,
        reference_split=arguments.reference_split,
        data_dir=arguments.data_dir,
        batch_size=arguments.batch_size,
        seed=arguments.seed,
        device=arguments.device,
        json_path=arguments.json,
        npz_path=arguments.save_npz,
        inception_weights=arguments.inception_weights,
        progress=not arguments.no_progress,
        **speed_arguments(arguments),
        **sampling,
    )
    report_with_floor(arguments, classifier, results)
    for path, what in ((arguments.json, "JSON"), (arguments.save_npz, "npz")):
        if path:
            print(f"{what}: {path}")


def report_with_floor(arguments: argparse.Namespace, classifier: str, results: dict) -> None:
    """The results table with the real held-out floor beside every score, then one warning line if they mislead."""
    import json

    from argen.checkpoint import atomic_write_text
    from argen.metrics.evaluate import load_evaluation_classifier
    from argen.metrics.trust import classifier_facts, floor_table, real_floor, trust_warning

    floor: dict[str, float] = {}
    if arguments.real is None:  # a real split is its own floor
        floor = real_floor(
            classifier, arguments.data, reference_split=arguments.reference_split, num_images=results["images"],
            data_dir=arguments.data_dir, device=arguments.device, progress=not arguments.no_progress,
        )  # fmt: skip
    for line in floor_table(results, floor):
        print(line)
    num_classes, feature_dim = classifier_facts(load_evaluation_classifier(classifier)[0])
    warning = trust_warning(
        classifier_accuracy=results.get("classifier_test_accuracy"), num_classes=num_classes, feature_dim=feature_dim,
        generated=results["images"], reference=results["reference"]["images"], fid=results.get("fid"),
        floor_fid=floor.get("fid"),
    )  # fmt: skip
    if warning:
        print(warning)
    if arguments.json:
        results = dict(results, real_held_out=floor, warning=warning)
        atomic_write_text(arguments.json, json.dumps(results, indent=2) + "\n")
