"""`argen train`: a generator, the transformer under a generation order on a tokenizer's ids."""

from __future__ import annotations

import argparse

from argen.commands.arguments import (
    add_data_arguments,
    add_preset_argument,
    add_speed_arguments,
    add_training_arguments,
    order_choices,
    show_defaults,
    training_config,
)
from argen.errors import ArgenError

NAME = "train"
HELP = "train a generator: the transformer under a generation order on a tokenizer"
DESCRIPTION = (
    "Train the transformer under a generation order on a tokenizer's ids; --out becomes a model directory that "
    "`argen sample` and `argen.Pipeline.from_pretrained` load."
)
ORDER = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (train-tokenizer --out)")
    from argen.orders import ORDERS

    parser.add_argument("--order", required=True, choices=list(ORDERS), help=f"generation order: {order_choices()}")
    add_data_arguments(parser)
    add_preset_argument(parser, default="3m")
    parser.add_argument("--tokens", help="token cache from `argen encode` (default: made in --out on first run)")
    parser.add_argument("--class-dropout", type=float, help="probability of training on the null class (CFG)")
    parser.add_argument("--dropout", type=float, help="dropout inside the transformer")
    parser.add_argument("--width", type=int, help="transformer width, overriding the preset's (a multiple of --heads)")
    parser.add_argument("--depth", type=int, help="transformer blocks, overriding the preset's")
    parser.add_argument("--heads", type=int, help="attention heads, overriding the preset's")
    add_training_arguments(parser, batch_size=128, learning_rate=1e-3, weight_decay=0.05, warmup_steps=200)
    add_speed_arguments(parser)

    show_defaults(parser)


def run(arguments: argparse.Namespace) -> None:
    from argen.train import train_generator

    overrides = {
        name: getattr(arguments, name)
        for name in ("class_dropout", "dropout", "width", "depth", "heads")
        if getattr(arguments, name) is not None
    }
    if overrides.get("width", 1) % overrides.get("heads", 1):
        raise ArgenError(f"--width {overrides['width']} must be a multiple of the number of heads")
    train_generator(
        arguments.tokenizer,
        arguments.order,
        arguments.data,
        training=training_config(arguments),
        preset=arguments.preset,
        data_dir=arguments.data_dir,
        tokens=arguments.tokens,
        transformer_overrides=overrides,
    )
