"""`argen decompress`: an ``.argz`` file → PNGs named after the originals (see argen.codec)."""

from __future__ import annotations

import argparse

from argen.commands.arguments import output_path

NAME = "decompress"
HELP = "decompress an .argz file to PNGs (--steps K: the coarse image of the first K scales or bands)"
DESCRIPTION = (
    "Decode an .argz file with the model that made it (recorded in the file; --model to point elsewhere). A file "
    "made with another model, a truncated or a corrupted file is refused with one line."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the .argz file")
    parser.add_argument("--out", required=True, type=output_path("--out", folder=True), help="folder for the PNGs")
    parser.add_argument("--steps", type=int, help="scale / frequency models: decode only the first K steps")
    parser.add_argument("--model", help="model directory (default: the one recorded in the file)")
    parser.add_argument("--residual", help="residual model directory for lossless files (default: as recorded)")
    parser.add_argument("--npz", help="also write all images into one npz file")
    parser.add_argument("--device", default="cpu", help="the kind of device the file was compressed on")
    parser.add_argument("--no-progress", action="store_true")


def run(arguments: argparse.Namespace) -> None:
    from argen.codec import decompress
    from argen.data import save_images_npz

    result = decompress(
        arguments.file,
        arguments.out,
        model=arguments.model,
        residual=arguments.residual,
        steps=arguments.steps,
        device=arguments.device,
        progress=not arguments.no_progress,
    )
    if arguments.npz:
        save_images_npz(arguments.npz, result.pixels, None)
    what = "exact images" if result.lossless else f"{result.steps} of {result.num_steps} steps"
    print(
        f"{len(result.pixels)} images ({what}) in {result.seconds:.2f} s ({result.images_per_second:.1f} images/s) "
        f"→ {arguments.out}" + (f" and {arguments.npz}" if arguments.npz else "")
    )
