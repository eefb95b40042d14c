"""The ``argen`` command: argparse subcommands, each a thin wrapper over one library function.

Errors a user can fix (`ArgenError`) print as one line, ``argen: error: ...``; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from argen import __version__
from argen.errors import ArgenError


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        required=True,
        help="image source: fashion-mnist, mnist, or folder:PATH (PNG/JPEG/WebP/BMP, one subfolder per class)",
    )
    group.add_argument(
        "--data-dir", help="folder holding the IDX files (default: $ARGEN_DATA, ~/.cache/argen, Debian's package)"
    )
    group.add_argument(
        "--image-size", type=int, help="resize + centre-crop to this side (default: native, 32 for folders)"
    )
    group.add_argument(
        "--channels", type=int, choices=(1, 3), help="1 grayscale or 3 RGB (default: native, 3 for folders)"
    )
    group.add_argument("--verbose", action="store_true", help="list every skipped file")


def add_training_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """The budget, optimizer and checkpoint flags every trainer shares (see `argen.train.TrainingConfig`)."""
    group = parser.add_argument_group("training")
    group.add_argument("--out", required=True, help="run directory; rerunning on it resumes (see --fresh)")
    group.add_argument("--steps", type=int, help="stop after this many optimizer steps")
    group.add_argument("--epochs", type=float, help="stop after this many passes over the data")
    group.add_argument("--minutes", type=float, help="stop after this many minutes of training (summed over resumes)")
    group.add_argument("--batch-size", type=int, default=defaults.get("batch_size", 128), help="global batch size")
    group.add_argument("--learning-rate", type=float, default=defaults.get("learning_rate", 1e-3))
    group.add_argument("--weight-decay", type=float, default=defaults.get("weight_decay", 0.0))
    group.add_argument("--warmup-steps", type=int, default=defaults.get("warmup_steps", 100))
    group.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0 disables clipping)")
    group.add_argument("--ema-decay", type=float, default=defaults.get("ema_decay", 0.999), help="0 disables EMA")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps")
    group.add_argument("--log-every", type=int, default=20, help="append to metrics.jsonl every N steps")
    group.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    group.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out and start over")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def training_config(arguments: argparse.Namespace):
    from argen.train import TrainingConfig

    return TrainingConfig(
        out=arguments.out,
        steps=arguments.steps,
        epochs=arguments.epochs,
        minutes=arguments.minutes,
        batch_size=arguments.batch_size,
        learning_rate=arguments.learning_rate,
        weight_decay=arguments.weight_decay,
        warmup_steps=arguments.warmup_steps,
        grad_clip=arguments.grad_clip,
        ema_decay=arguments.ema_decay,
        seed=arguments.seed,
        save_every=arguments.save_every,
        log_every=arguments.log_every,
        device=arguments.device,
        fresh=arguments.fresh,
        progress=not arguments.no_progress,
    )


# ----------------------------------------------------------------------------------------------------------------
# Subcommands


def command_data_info(arguments: argparse.Namespace) -> None:
    from argen.data import find_idx_files, image_grid, load_dataset

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
        print(f"{arguments.data} [{split}]: {len(dataset)} images, {channels}×{height}×{width} uint8")
        print(f"  loaded in {seconds:.2f} s ({len(dataset) / max(seconds, 1e-9):.0f} images/s)")
        if dataset.labels is None:
            print("  unlabelled")
        else:
            counts = dataset.labels.bincount(minlength=dataset.num_classes).tolist()
            listed = ", ".join(f"{name} ({count})" for name, count in zip(dataset.classes, counts))
            print(f"  {dataset.num_classes} classes: {listed}")
        print(f"  skipped files: {len(dataset.skipped)}")
        if split == "train" and arguments.grid:
            image_grid(dataset.images[: arguments.grid_count]).save(arguments.grid)
            print(f"  wrote a grid of the first {min(arguments.grid_count, len(dataset))} images to {arguments.grid}")
    if not arguments.data.startswith("folder:"):
        print(f"IDX files: {find_idx_files(arguments.data, arguments.data_dir)}")


def command_train_classifier(arguments: argparse.Namespace) -> None:
    from argen.classifier import train_classifier

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="argen",
        description="Autoregressive image generation over learned tokenizers: next-frequency (NFIG), next-scale "
        "(VAR), raster and next-neighbor orders on one tokenizer, transformer, sampler and evaluation stack.",
        epilog="Run `argen COMMAND --help` for a command's flags. Add --debug to any command to see tracebacks. "
        "Scale out with `torchrun --nproc_per_node=N -m argen COMMAND ...`.",
    )
    parser.add_argument("--version", action="version", version=f"argen {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    data_info = commands.add_parser(
        "data-info",
        parents=[common],
        help="describe an image source and write a grid of examples",
        description="Load both splits of an image source, print counts, shapes, classes and skipped files.",
    )
    add_data_arguments(data_info)
    data_info.add_argument("--grid", help="write a PNG grid of the first training images here")
    data_info.add_argument("--grid-count", type=int, default=64, help="how many images in the grid")
    data_info.set_defaults(handler=command_data_info)

    classifier = commands.add_parser(
        "train-classifier",
        parents=[common],
        help="train the small classifier whose features drive FID/KID/IS and class accuracy",
        description="Train a small CNN classifier on the train split; reports test accuracy at the end.",
    )
    add_data_arguments(classifier)
    add_training_arguments(classifier, batch_size=128, learning_rate=2e-3, weight_decay=0.05)
    classifier.add_argument("--width", type=int, default=32, help="base channel count of the CNN")
    classifier.add_argument("--shift", type=int, default=2, help="augment with random shifts of up to N pixels")
    classifier.add_argument("--flip", action="store_true", help="mirror images left-right as augmentation")
    classifier.add_argument("--dropout", type=float, default=0.2, help="dropout before the last layer")
    classifier.set_defaults(handler=command_train_classifier)
    return parser


def run(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the command; errors propagate (for tests and library use)."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if getattr(arguments, "handler", None) is None:
        parser.print_help()
        return
    handler: Callable[[argparse.Namespace], None] = arguments.handler
    handler(arguments)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, exit codes 1 (error) and 130 (Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        run(argv)
    except ArgenError as error:
        if debug:
            raise
        print(f"argen: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        if debug:
            raise
        print("argen: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # a bug: still one line by default, the traceback with --debug
        if debug:
            raise
        print(f"argen: error: {type(error).__name__}: {error} (rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
