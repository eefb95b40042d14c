"""`argen encode`: a dataset's token ids, computed once, for generator training."""

from __future__ import annotations

import argparse

from argen.commands.arguments import add_data_arguments, output_path

NAME = "encode"
HELP = "encode a dataset's images to token ids once (a cache for generator training)"
DESCRIPTION = (
    "Store every image's ids (compact integers) with the tokenizer's fingerprint; a cache made by another tokenizer "
    "is refused when read."
)
ORDER = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory")
    add_data_arguments(parser)
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument(
        "--out", required=True, type=output_path("--out"), help="cache file to write, e.g. tokens.safetensors"
    )
    parser.add_argument("--no-progress", action="store_true")


def run(arguments: argparse.Namespace) -> None:
    from argen.checkpoint import release_fingerprint
    from argen.data import load_dataset
    from argen.tokenizers import load_tokenizer
    from argen.tokenizers.cache import encode_dataset, save_token_cache

    tokenizer, _ = load_tokenizer(arguments.tokenizer)
    config = tokenizer.config
    dataset = load_dataset(
        arguments.data,
        split=arguments.split,
        data_dir=arguments.data_dir,
        image_size=config.image_size,
        channels=config.channels,
        verbose=arguments.verbose,
        progress=not arguments.no_progress,
    )
    ids = encode_dataset(tokenizer, dataset, progress=not arguments.no_progress)
    save_token_cache(
        arguments.out,
        ids=ids,
        labels=dataset.labels,
        classes=dataset.classes,
        codebook_size=tokenizer.codebook_size,
        fingerprint=release_fingerprint(arguments.tokenizer),
        spec=arguments.data,
        split=arguments.split,
    )
    shapes = ", ".join(f"{height}×{width}" for height, width in tokenizer.grid_shapes)
    print(f"encoded {len(dataset)} images into grids {shapes}: {arguments.out}")
