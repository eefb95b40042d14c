"""`argen eval-tokenizer`: reconstruction quality and codebook health of a tokenizer."""

from __future__ import annotations

import argparse

from argen.commands.arguments import add_data_arguments, print_results

NAME = "eval-tokenizer"
HELP = "PSNR, SSIM, codebook usage, perplexity and bits per image of a tokenizer"
DESCRIPTION = (
    "Reconstruct a split with a trained tokenizer and measure it; saves originals above reconstructions as a PNG."
)
ORDER = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (a train-tokenizer --out)")
    add_data_arguments(parser)
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument("--image", help="PNG path (default: TOKENIZER/reconstructions-SPLIT.png)")
    parser.add_argument("--no-progress", action="store_true")


def run(arguments: argparse.Namespace) -> None:
    from argen.metrics.evaluate import evaluate_tokenizer

    image_path = arguments.image or f"{arguments.tokenizer.rstrip('/')}/reconstructions-{arguments.split}.png"
    results = evaluate_tokenizer(
        arguments.tokenizer,
        arguments.data,
        split=arguments.split,
        data_dir=arguments.data_dir,
        limit=arguments.limit,
        json_path=arguments.json,
        image_path=image_path,
        progress=not arguments.no_progress,
    )
    print_results(results)
    print(f"originals above reconstructions: {image_path}")
