"""`argen train-classifier`: the small CNN whose features drive the offline generator metrics."""

from __future__ import annotations

import argparse

from argen.commands.arguments import add_data_arguments, add_training_arguments, show_defaults, training_config

NAME = "train-classifier"
HELP = "train the small classifier whose features drive FID/KID/IS and class accuracy"
DESCRIPTION = "Train a small CNN classifier on the train split; reports test accuracy at the end."
ORDER = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    add_training_arguments(parser, batch_size=128, learning_rate=2e-3, weight_decay=0.05)
    parser.add_argument("--width", type=int, default=32, help="base channel count of the CNN")
    parser.add_argument("--shift", type=int, default=2, help="augment with random shifts of up to N pixels")
    parser.add_argument("--flip", action="store_true", help="mirror images left-right as augmentation")
    parser.add_argument("--dropout", type=float, default=0.2, help="dropout before the last layer")
    parser.add_argument(
        "--prototypes", type=int, default=0,
        help="N > 0: train the prototype classifier of Li et al. (arXiv 1710.04806) with N prototypes instead",
    )  # fmt: skip

    show_defaults(parser)


def run(arguments: argparse.Namespace) -> None:
    from argen.train import train_classifier

    if arguments.prototypes:
        from argen.interpret.prototypes import train_prototype_classifier

        train_prototype_classifier(
            arguments.data, training=training_config(arguments), prototypes=arguments.prototypes,
            data_dir=arguments.data_dir, image_size=arguments.image_size, channels=arguments.channels,
        )  # fmt: skip
        return

    train_classifier(
        arguments.data,
        training=training_config(arguments),
        data_dir=arguments.data_dir,
        image_size=arguments.image_size,
        channels=arguments.channels,
        width=arguments.width,
        shift=arguments.shift,
        flip=arguments.flip,
        dropout=arguments.dropout,
    )
