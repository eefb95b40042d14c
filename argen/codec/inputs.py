"""The images `argen compress` reads: image files, folders of them and npz files → uint8 (N, C, H, W) and names.

Pixels are taken exactly as stored (no EXIF rotation, no colour management), so lossless means the file's own
pixel values. Files are opened through the one image reader (`argen.data.images.open_image`: regular files only,
raster formats only, the pixel limit checked from the header before decoding); an image the model cannot take as
stored is converted by `argen.data.images.read_image`, the rule every other command reads pictures with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from argen.codec.container import unique_names
from argen.data import load_images_npz
from argen.data.dataset import one_line
from argen.data.folder import list_image_files
from argen.data.images import ALPHA_MODES, MAX_PIXELS, check_pixels, open_image, read_image
from argen.data.pixels import resize_tensor_images
from argen.errors import ArgenError


def read_inputs(
    inputs: list[str | Path], *, shape: tuple[int, int, int], resize: bool = False
) -> tuple[Tensor, list[str], int]:
    """Image files, folders of them (recursive) and npz files of uint8 images → (uint8 (N, C, H, W), names, how
    many were resized or converted).

    An image whose size, channel count, bit depth or transparency the model cannot take is refused unless
    ``resize``; then it is converted, composited on white and resized (shorter side, centre crop) as `argen.data`
    does for training. Names: the file's path without suffix (relative to a folder argument), or ``STEM_00000``…
    for an npz; repeated names get ``-2``, ``-3``… (never a name another input already has: `unique_names`).
    """
    channels, size, _ = shape
    arrays: list[Tensor] = []
    names: list[str] = []
    converted = 0
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            files = [(path / relative, relative.with_suffix("").as_posix()) for relative in list_image_files(path)]
            if not files:
                raise ArgenError(f"{path} holds no image files (PNG/JPEG/WebP/BMP)")
        elif path.suffix.lower() == ".npz":
            images, _ = load_images_npz(path)
            if tuple(images.shape[1:]) != shape:
                if not resize:
                    raise ArgenError(
                        f"{path} holds {images.shape[3]}×{images.shape[2]} images with {images.shape[1]} channel(s) "
                        f"and the model takes {size}×{size} with {channels}: pass --resize to resize them"
                    )
                images = resize_tensor_images(images, image_size=size, channels=channels)
                converted += len(images)
            digits = max(5, len(str(len(images) - 1)))
            arrays.extend(images)
            names.extend(f"{path.stem}_{index:0{digits}d}" for index in range(len(images)))
            continue
        elif path.exists():
            files = [(path, path.stem)]
        else:
            raise ArgenError(f"{path} does not exist: give image files, folders of images or npz files")
        for file, name in files:
            pixels, changed = read_image_file(file, shape=shape, resize=resize)
            arrays.append(pixels)
            names.append(name)
            converted += changed
    if not arrays:
        raise ArgenError("no images to compress")
    return torch.stack(arrays), unique_names(names), converted


def read_image_file(path: Path, *, shape: tuple[int, int, int], resize: bool) -> tuple[Tensor, bool]:
    """One image file → (uint8 (C, H, W), whether it was converted); see `read_inputs`."""
    channels, size, _ = shape
    try:
        with open_image(path, name=str(path)) as image:
            check_pixels(image, name=str(path), max_pixels=MAX_PIXELS)
            image.load()
            pixels, problem = _exact_pixels(image, shape)
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ArgenError(f"cannot read {path} as an image ({one_line(error)}): fix or remove it") from None
    if pixels is not None:
        return pixels, False
    if not resize:
        kind = "grayscale" if channels == 1 else "RGB"
        raise ArgenError(
            f"{path} {problem}, and the model takes {size}×{size} {kind} images: pass --resize to convert it "
            "(the decompressed image is then the converted one)"
        )
    pixels = read_image(path, channels=channels, size=size)  # (H, W, C)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy()), True


def _exact_pixels(image: Image.Image, shape: tuple[int, int, int]) -> tuple[Tensor | None, str | None]:
    """(uint8 (C, H, W), None) when the image's own values fit ``shape`` unchanged, else (None, what is wrong)."""
    channels, size, _ = shape
    if image.mode == "1":
        image = image.convert("L")  # bilevel → 0/255, exact
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ALPHA_MODES:
        if np.asarray(image.getchannel("A")).min() < 255:
            return None, "has transparency"
        image = image.convert("RGB" if image.mode.startswith(("RGB", "P")) else "L")
    if image.mode not in ("L", "RGB"):
        return None, f"is a {image.mode} image"
    if image.mode == "RGB" and channels == 1:
        array = np.asarray(image)
        if (array == array[..., :1]).all():  # grey stored as RGB: the grey values are the pixels
            image = image.convert("L")
    native = {"L": 1, "RGB": 3}[image.mode]
    if native != channels:
        return None, f"has {native} channel(s)"
    if image.size != (size, size):
        return None, f"is {image.size[0]}×{image.size[1]}"
    array = np.array(image)  # a copy: PIL's buffer is read-only
    return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy()), None
