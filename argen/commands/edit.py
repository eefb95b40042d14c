"""``argen edit``: inpaint, outpaint or class-edit one image with a model directory (see `argen.editing`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from argen.commands.arguments import add_sampling_arguments, output_path, print_sampling_settings, sampling_arguments
from argen.errors import ArgenError

NAME = "edit"
HELP = "inpaint, outpaint or class-edit an image: regenerate the masked part (or the detail, --keep-steps)"
DESCRIPTION = (
    "Encode --image, keep the tokens outside the mask (white = regenerate) and sample the rest under --label; "
    "pixels outside the mask are copied back exactly unless --no-paste-back. --outpaint inverts the mask; "
    "--keep-steps K keeps the first K steps of the image (coarse scales / low bands) and regenerates the rest."
)
ORDER = 75


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory (argen train --out)")
    parser.add_argument("--image", required=True, help="the image to edit, at the model's size (e.g. 28×28)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--mask", help="PNG of the image's size: white (≥ 128) = regenerate, black = keep")
    where.add_argument("--box", metavar="X0,Y0,X1,Y1", help="regenerate this box (pixels, X1 and Y1 exclusive)")
    parser.add_argument("--outpaint", action="store_true", help="invert the mask: keep inside, regenerate outside")
    parser.add_argument(
        "--keep-steps", type=int, metavar="K",
        help="class editing: keep every token of the first K steps and regenerate the rest under --label "
        "(without --mask/--box everything after step K is regenerated)",
    )  # fmt: skip
    parser.add_argument("--label", help="class index or name to generate (default: the null class, no label)")
    parser.add_argument(
        "--out",
        default="edited.png",
        type=output_path("--out"),
        help="PNG to write (a row of --num edits when --num > 1)",
    )
    parser.add_argument(
        "--resize", action="store_true",
        help="resize --image (and --mask) to the model's size first: the centred square, bicubic (nearest for the "
        "mask), as training folders are read; --box is then in the resized pixels",
    )  # fmt: skip
    parser.add_argument("--num", type=int, default=1, help="edits to make")
    parser.add_argument("--no-paste-back", action="store_true", help="raw decode: do not copy back outside pixels")
    parser.add_argument(
        "--fill", choices=("smooth", "keep"), default="smooth",
        help="what the encoder sees under the mask: a smooth fill from around it (default) or the image as given",
    )  # fmt: skip
    parser.add_argument(
        "--particles", type=int, default=1, metavar="P",
        help="sequential Monte Carlo: P decodings per edit weighted by how well they fit the kept tokens (P× cost)",
    )  # fmt: skip
    add_sampling_arguments(parser)


def parse_box(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise ArgenError(f"--box takes four integers x0,y0,x1,y1, got {text!r}") from None
    if len(values) != 4:
        raise ArgenError(f"--box takes four integers x0,y0,x1,y1, got {text!r}")
    return values


def read_mask(path: str, *, size: int | None) -> np.ndarray:
    """The mask file as uint8 (H, W); with ``size``, its centred square resized by nearest neighbour, so a mask
    drawn on the original picture still marks the same cells and stays black and white."""
    from PIL import Image

    from argen.data.images import read_image

    grey = read_image(path, channels=1, name=f"--mask {path}")[..., 0]
    if size is None or grey.shape == (size, size):
        return grey
    side = min(grey.shape)
    top, left = (grey.shape[0] - side) // 2, (grey.shape[1] - side) // 2
    square = Image.fromarray(grey[top : top + side, left : left + side])
    return np.asarray(square.resize((size, size), Image.Resampling.NEAREST))


def run(arguments: argparse.Namespace) -> None:
    import torch

    from argen.checkpoint import atomic_write
    from argen.data import image_grid
    from argen.data.images import read_image
    from argen.data.masks import as_masks, box_mask
    from argen.pipeline import Pipeline

    if arguments.mask is None and arguments.box is None and arguments.keep_steps is None:
        raise ArgenError("say what to regenerate: --mask MASK.png, --box x0,y0,x1,y1 or --keep-steps K")
    if arguments.outpaint and arguments.mask is None and arguments.box is None:
        raise ArgenError("--outpaint inverts a mask: add --mask or --box")
    if arguments.num < 1 or arguments.particles < 1:
        raise ArgenError("--num and --particles must be at least 1")
    pipeline = Pipeline.from_pretrained(arguments.model, device=arguments.device)
    # The one image reader (argen.data.images): the same file gives the same pixels here and in `argen serve`.
    size = pipeline.tokenizer.config.image_size if arguments.resize else None
    pixels = read_image(
        arguments.image, channels=pipeline.tokenizer.config.channels, size=size, name=f"--image {arguments.image}"
    )
    image = torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]  # (1, C, H, W)
    height, width = image.shape[-2:]
    if arguments.mask is not None:
        grey = read_mask(arguments.mask, size=size)  # (H, W)
        mask = as_masks(torch.from_numpy(grey >= 128), batch=1, height=height, width=width)[0]
    elif arguments.box is not None:
        mask = box_mask(height, width, parse_box(arguments.box))
    else:
        mask = torch.ones(height, width, dtype=torch.bool)
    if arguments.outpaint:
        mask = ~mask
    if not bool(mask.any()):
        raise ArgenError("the mask regenerates nothing: paint the part to regenerate white")
    given = sampling_arguments(arguments)
    print_sampling_settings(pipeline, given)
    sampling = dict(
        **given, keep_steps=arguments.keep_steps, paste_back=not arguments.no_paste_back, fill=arguments.fill,
        particles=arguments.particles,
    )  # fmt: skip
    pixels = []
    for batch_index, start in enumerate(range(0, arguments.num, arguments.batch_size)):
        count = min(arguments.batch_size, arguments.num - start)
        output = pipeline.edit(
            image, mask[None], arguments.label, num=count, seed=arguments.seed + batch_index, **sampling
        )
        pixels.append(output.pixels.cpu())
    pixels = torch.cat(pixels)
    picture = output.images[0] if arguments.num == 1 else image_grid(pixels, columns=arguments.num)
    suffix = Path(arguments.out).suffix.lower()
    format_name = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}.get(suffix, "PNG")
    atomic_write(arguments.out, lambda temporary: picture.save(temporary, format=format_name))
    share = float(mask.float().mean())
    label = "the null class" if arguments.label is None else f"label {arguments.label}"
    kept = f", the first {arguments.keep_steps} steps kept" if arguments.keep_steps else ""
    print(f"{arguments.num} edit(s) of {arguments.image} under {label}: {share:.0%} of the pixels regenerated{kept}, "
          f"{output.forward_passes} forward passes per batch; wrote {arguments.out}")  # fmt: skip
