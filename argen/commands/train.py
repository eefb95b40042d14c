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
# The recipe for --steps/--epochs budgets, and what a --minutes budget chooses from when these flags are left out.
RECIPE = {"preset": "3m", "batch_size": 128, "warmup_steps": 200}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (train-tokenizer --out)")
    from argen.orders import ORDERS

    parser.add_argument("--order", required=True, choices=list(ORDERS), help=f"generation order: {order_choices()}")
    add_data_arguments(parser)
    add_preset_argument(parser, default=None)
    parser.add_argument("--tokens", help="token cache from `argen encode` (default: made in --out on first run)")
    parser.add_argument("--class-dropout", type=float, help="probability of training on the null class (CFG)")
    parser.add_argument("--dropout", type=float, help="dropout inside the transformer")
    parser.add_argument("--width", type=int, help="transformer width, overriding the preset's (a multiple of --heads)")
    parser.add_argument("--depth", type=int, help="transformer blocks, overriding the preset's")
    parser.add_argument("--heads", type=int, help="attention heads, overriding the preset's")
    add_training_arguments(parser, batch_size=None, learning_rate=1e-3, weight_decay=0.05, warmup_steps=None)
    add_speed_arguments(parser)
    # --preset, --batch-size and --warmup-steps default to None so that `run` can tell a flag the user gave from a
    # default: with --minutes, those left out are chosen by timing a few steps (argen.train.budget).
    for action in parser._actions:
        if action.dest in RECIPE:
            action.help += f" (default: {RECIPE[action.dest]}; with --minutes, chosen to fit the budget here)"
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
    choose = tuple(name for name in RECIPE if getattr(arguments, name) is None)
    for name in choose:
        setattr(arguments, name, RECIPE[name])
    train_generator(
        arguments.tokenizer,
        arguments.order,
        arguments.data,
        training=training_config(arguments),
        preset=arguments.preset,
        choose=choose if arguments.minutes is not None else (),
        data_dir=arguments.data_dir,
        tokens=arguments.tokens,
        transformer_overrides=overrides,
    )
