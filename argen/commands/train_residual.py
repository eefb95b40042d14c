"""`argen train-residual`: the p(image | reconstruction) model that makes `argen compress --lossless` exact."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "train-residual"
HELP = "train the residual model p(image | reconstruction) for lossless compression with a model directory"
DESCRIPTION = (
    "Train a small conv net giving every pixel a distribution over its 256 values from the tokenizer's "
    "reconstruction (and, in stages, the pixels already coded). The release goes to MODEL/residual (--release), "
    "the run (state, metrics, cached reconstructions) to --out; rerunning resumes."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from argen.commands.arguments import add_training_arguments

    parser.add_argument("--model", required=True, help="model directory whose tokenizer the residual model serves")
    parser.add_argument("--release", help="where the residual release goes (default: MODEL/residual)")
    parser.add_argument("--data", help="training images (default: the data the generator was trained on)")
    parser.add_argument("--data-dir", help="folder holding the IDX files")
    parser.add_argument("--limit", type=int, help="train on the first N images only (quick runs)")
    parser.add_argument("--width", type=int, default=32, help="conv channels")
    parser.add_argument("--blocks", type=int, default=3, help="residual blocks")
    parser.add_argument("--mixtures", type=int, default=5, help="logistic mixture components per pixel")
    parser.add_argument(
        "--stages", type=int, choices=(1, 2, 4), default=4, help="coding passes: 1 all pixels at once, 2 checkerboard, "
        "4 the 2×2 polyphase components (each pass sees the pixels of the earlier ones)"
    )  # fmt: skip
    add_training_arguments(parser, batch_size=64, learning_rate=2e-3, warmup_steps=100, ema_decay=0.999)
    out = next(action for action in parser._actions if action.dest == "out")
    out.required, out.help = False, "run directory (default: MODEL/residual-run); rerunning on it resumes"


def run(arguments: argparse.Namespace) -> None:
    from dataclasses import replace

    from argen.codec.residual import ResidualConfig
    from argen.commands.arguments import training_config
    from argen.train.residual import train_residual

    if arguments.out is None:
        arguments.out = str(Path(arguments.model) / "residual-run")
    config = ResidualConfig(
        width=arguments.width, blocks=arguments.blocks, mixtures=arguments.mixtures, stages=arguments.stages
    )
    result = train_residual(
        arguments.model,
        training=replace(training_config(arguments)),
        release=arguments.release,
        config=config,
        data=arguments.data,
        data_dir=arguments.data_dir,
        limit=arguments.limit,
    )
    if result.is_main:
        bits = result.last_logs.get("bits_per_dim")
        shown = f", last batch {bits:.3f} bits/dim" if bits is not None else ""
        release = arguments.release or Path(arguments.model) / "residual"
        print(f"residual model at step {result.step}{shown}: {release}")
