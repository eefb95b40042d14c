"""`argen export`: a shareable copy of a model directory or a release, without training state."""

from __future__ import annotations

import argparse
from pathlib import Path

from argen.commands.arguments import output_path
from argen.errors import ArgenError

NAME = "export"
HELP = "copy a model directory or a release without training state, weights in half precision"
DESCRIPTION = (
    "Write a shareable copy: config.json + model.safetensors per component, floating weights stored as --dtype "
    "(loading casts them back), no token cache or train_state.pt."
)
ORDER = 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory (argen train --out) or a release directory")
    parser.add_argument("--out", required=True, type=output_path("--out", folder=True), help="directory to write")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")


def export_model(source: str | Path, destination: str | Path, *, dtype=None) -> None:
    """A model directory's tokenizer and generator, weights stored as ``dtype`` (a torch dtype, None keeps them).

    The token cache and training state stay behind. The tokenizer's fingerprint changes with its weights, so the
    generator's record of it is rewritten; the pair is loaded once at the end to prove it still fits together.
    """
    from argen.checkpoint import export_release, release_fingerprint
    from argen.model_directory import read_recommended_sampling, write_recommended_sampling
    from argen.pipeline import Pipeline

    source, destination = Path(source), Path(destination)
    Pipeline.from_pretrained(source)  # refuse a broken or mismatched source before writing anything
    export_release(source / "tokenizer", destination / "tokenizer", dtype=dtype)
    fingerprint = release_fingerprint(destination / "tokenizer")
    export_release(
        source / "generator",
        destination / "generator",
        dtype=dtype,
        extra_updates={"tokenizer_fingerprint": fingerprint},
    )
    recommended = read_recommended_sampling(source)  # checked, then carried along with the weights
    if recommended:
        write_recommended_sampling(destination, recommended, chosen_by=read_chosen_by(source))
    Pipeline.from_pretrained(destination)


def read_chosen_by(directory: Path) -> str | None:
    import json

    from argen.model_directory import SAMPLING_NAME

    return json.loads((directory / SAMPLING_NAME).read_text()).get("chosen_by")


def run(arguments: argparse.Namespace) -> None:
    import torch

    from argen.checkpoint import CONFIG_NAME, export_release

    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": None}[arguments.dtype]
    source = Path(arguments.model)
    if (source / "generator" / CONFIG_NAME).is_file():
        export_model(source, arguments.out, dtype=dtype)
    elif (source / CONFIG_NAME).is_file():
        export_release(source, arguments.out, dtype=dtype)
    else:
        raise ArgenError(f"{source} is neither a model directory (generator/ + tokenizer/) nor a release (config.json)")
    size = sum(path.stat().st_size for path in Path(arguments.out).rglob("*") if path.is_file())
    print(f"exported {source} to {arguments.out} ({size / 1e6:.2f} MB, {arguments.dtype})")
