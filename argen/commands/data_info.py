"""`argen data-info`: load both splits of an image source and describe them."""

from __future__ import annotations

import argparse
import time

from argen.commands.arguments import add_data_arguments

NAME = "data-info"
HELP = "describe an image source and write a grid of examples"
DESCRIPTION = "Load both splits of an image source, print counts, shapes, classes and skipped files."
ORDER = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--grid", help="write a PNG grid of the first training images here")
    parser.add_argument("--grid-count", type=int, default=64, help="how many images in the grid")


def run(arguments: argparse.Namespace) -> None:
    from functools import partial

    from argen.data import IDX_SOURCES, find_idx_files, image_grid, load_dataset

    # Flushed at once: the loading progress bar writes to stderr, and a buffered stdout would come out glued to it
    # ("skipped files: 0decoding images:") when both go to one terminal or file.
    say = partial(print, flush=True)

    for split in ("train", "test"):
        start = time.perf_counter()
        dataset = load_dataset(
            arguments.data,
            split=split,
            data_dir=arguments.data_dir,
            image_size=arguments.image_size,
            channels=arguments.channels,
            verbose=arguments.verbose,
        )
        seconds = time.perf_counter() - start
        channels, height, width = dataset.image_shape
        say(f"{arguments.data} [{split}]: {len(dataset)} images, {channels}×{height}×{width} uint8")
        say(f"  loaded in {seconds:.2f} s ({len(dataset) / max(seconds, 1e-9):.0f} images/s)")
        if dataset.labels is None:
            say("  unlabelled")
        else:
            counts = dataset.labels.bincount(minlength=dataset.num_classes).tolist()
            listed = ", ".join(f"{name} ({count})" for name, count in zip(dataset.classes, counts))
            say(f"  {dataset.num_classes} classes: {listed}")
        say(f"  skipped files: {len(dataset.skipped)}")
        if split == "train" and arguments.grid:
            image_grid(dataset.images[: arguments.grid_count]).save(arguments.grid)
            say(f"  wrote a grid of the first {min(arguments.grid_count, len(dataset))} images to {arguments.grid}")
    if arguments.data.lower() in IDX_SOURCES:
        say(f"IDX files: {find_idx_files(arguments.data, arguments.data_dir)}")
