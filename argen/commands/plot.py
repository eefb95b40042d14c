"""`argen plot`: training curves (loss, validation loss, learning rate, throughput) of one or more runs."""

from __future__ import annotations

import argparse

NAME = "plot"
HELP = "draw the training curves of runs' metrics.jsonl (loss, validation loss, learning rate, throughput)"
DESCRIPTION = "Draw the curves of one or more run directories' metrics.jsonl into one image, runs overlaid."
ORDER = 75


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (argen train* --out) or metrics files")
    parser.add_argument("--out", default="curves.png", help="image to write; PNG, SVG or PDF by suffix")


def run(arguments: argparse.Namespace) -> None:
    from argen.train.curves import plot_runs

    print(f"curves: {plot_runs(arguments.runs, arguments.out)}")
