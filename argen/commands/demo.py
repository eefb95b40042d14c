"""`argen demo`: the shipped pipelines of every order on one page."""

from __future__ import annotations

import argparse
from pathlib import Path

from argen.commands.arguments import add_per_label_arguments

NAME = "demo"
HELP = "sample every shipped Fashion-MNIST pipeline and write demo/index.html (under a minute on a CPU)"
DESCRIPTION = (
    "Load the shipped pipelines (checkpoints/fashion-mnist/<order>/), sample a grid and a step-by-step GIF per "
    "order, time them, and write a page with the speed and quality tables."
)
ORDER = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", help="folder of <order>/ model directories (default: the shipped ones)")
    parser.add_argument("--data", default="fashion-mnist", help="which shipped checkpoints to use")
    parser.add_argument("--out", default="demo", help="folder to write index.html and the pictures into")
    add_per_label_arguments(parser, default=4, meaning="samples per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg-scale", type=float, help="guidance scale (default: the one results.json was made with)")
    parser.add_argument("--no-progress", action="store_true")


def run(arguments: argparse.Namespace) -> None:
    from argen.apps.demo import run_demo

    summary = run_demo(
        checkpoints=arguments.checkpoints, data=arguments.data, out=arguments.out, per_class=arguments.per_label,
        seed=arguments.seed, cfg_scale=arguments.cfg_scale, progress=not arguments.no_progress,
    )  # fmt: skip
    for row in summary["orders"]:
        print(f"{row['order']:<10} {row['steps']:>3} forward passes/image  {row['images_per_second']:7.1f} images/s")
    print(f"open {Path(arguments.out) / 'index.html'} in a browser (made in {summary['seconds']:.1f} s)")
