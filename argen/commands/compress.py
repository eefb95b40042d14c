"""`argen compress`: images → an ``.argz`` file, with the generator as the entropy model (see argen.codec)."""

from __future__ import annotations

import argparse

from argen.commands.arguments import output_path

NAME = "compress"
HELP = "compress images with a model as entropy model: lossy (the token stream) or --lossless (exact pixels)"
DESCRIPTION = (
    "Code images with a model directory's generator as the probability model: the tokens alone (lossy; the "
    "decoded image is the tokenizer's reconstruction, progressive for scale and frequency models) or tokens plus "
    "the pixels given the reconstruction (--lossless; exact). Images of another size or channel count are "
    "refused unless --resize."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or npz files")
    parser.add_argument("--model", required=True, help="model directory (made by argen train)")
    parser.add_argument("--out", required=True, type=output_path("--out"), help="the .argz file to write")
    parser.add_argument("--lossless", action="store_true", help="exact round trip (needs a residual model)")
    parser.add_argument("--residual", help="residual model directory (default: MODEL/residual)")
    parser.add_argument(
        "--class-prior",
        choices=("uniform", "null"),
        default="uniform",
        help="class-conditional models: code the cheapest class with a uniform prior (log2(classes) bits, "
        "smaller files) or use the null class (no class search, faster encoding)",
    )
    parser.add_argument("--block-size", type=int, default=256, help="images per model call (recorded in the file)")
    parser.add_argument("--resize", action="store_true", help="resize and convert images the model cannot take")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (decompress on the same kind of device)")
    parser.add_argument("--no-progress", action="store_true")


def run(arguments: argparse.Namespace) -> None:
    from argen.codec import compress

    _, report = compress(
        arguments.model,
        arguments.inputs,
        arguments.out,
        lossless=arguments.lossless,
        residual=arguments.residual,
        class_prior=arguments.class_prior,
        block_size=arguments.block_size,
        resize=arguments.resize,
        device=arguments.device,
        progress=not arguments.no_progress,
    )
    print(report.summary())
    print(f"wrote {arguments.out}")
