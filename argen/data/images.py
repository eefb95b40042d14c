"""The one image reader: a path, bytes or a PIL image → uint8 pixels, one rule for everything a picture can be.

Every entry point that takes a picture from a user reads it here: image folders for training (`argen.data.folder`),
the uploads of `argen serve`, the images and masks of `argen edit` and `Pipeline.edit` (`as_images`), and the codec.
So the same file gives the same pixels whichever command reads it.

The rule, in the order it is applied:

1. Refusals before any pixel is decoded. A path that is not a regular file (a FIFO, a device, a socket) is never
   opened for reading (opening a FIFO blocks until a writer comes). Only the raster formats in `FORMATS` are
   identified (PIL's EPS reader would run Ghostscript). The size in the header, after JPEG's draft scaling, must be
   at most ``max_pixels`` (`MAX_PIXELS` unless given): a 60 KB PNG can declare 4096×4096 RGBA, 64 MB once decoded.
   PIL's own `Image.DecompressionBombError` is turned into the same refusal.
2. Orientation: the EXIF orientation tag is applied (`ImageOps.exif_transpose`), as photo viewers do; a phone photo
   stored sideways comes out upright.
3. Depth: 16- and 32-bit integer grey ("I;16", "I") is scaled by 1/257 to 0-255 (PIL's conversion clips instead);
   float grey ("F") is read on PIL's 0-255 scale, rounded and clipped.
4. Transparency (alpha channels, premultiplied alpha, palette or colour-key transparency) is composited onto
   **white**, the background image viewers and browsers show, so a transparent pixel never exposes whatever colour it
   happens to store. White rather than black: it is what folders of training images have always been read with, and
   a logo or a cut-out on a web page looks like this. (A Fashion-MNIST model, trained on black backgrounds, sees a
   transparent cut-out as an object on white: paint the background black first if that is what you mean.)
5. Colour: every other mode (palette, CMYK, YCbCr, LAB, HSV, bilevel...) goes through PIL's conversion to "RGB"; one
   channel is then PIL's "L" (ITU-R 601-2 luma), three are "RGB" (grey repeated).
6. Size, only when a ``size`` is asked for: the centred square is resized to ``size``×``size`` with bicubic
   resampling (the same as resizing the shorter side then centre-cropping, without resampling pixels that are
   cropped away). JPEGs are decoded at the smallest DCT scale that stays at least ``size`` on both sides (much
   faster for photos, and what the training folders have always used).

Legend: H/W image size, C channels (1 or 3), B images.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from argen.errors import ArgenError

# 2^25 pixels (a 8192×4096 picture): about 130 MB as decoded RGBA, and every conversion copy stays far below 1 GB.
# Larger photos still load for training when they are JPEGs, whose draft decoding shrinks them before the check.
MAX_PIXELS = 2**25

# The raster formats users send; any other is refused unidentified (EPS would start Ghostscript, for one).
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "GIF", "TIFF")  # JPEG includes MPO (phone photos)

# Modes carrying an alpha channel (plain or premultiplied); convert("RGB") would just drop it.
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
PREMULTIPLIED_MODES = frozenset({"RGBa", "La"})

# Integer grey of more than 8 bits: PIL's convert("L") clips values above 255 instead of scaling them.
DEEP_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})

# Broad on purpose: corrupt data makes PIL's decoders raise OSError, ValueError, SyntaxError, struct.error,
# IndexError, EOFError and more, and any of them means this picture cannot be read.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, IndexError, EOFError, TypeError, KeyError, ArithmeticError)

ImageSource = str | os.PathLike | bytes | bytearray | Image.Image


class UnreadableImage(ArgenError):
    """The source is not a picture this reader decodes (not an image, corrupt, truncated, not a regular file)."""


class ImageTooLarge(ArgenError):
    """The picture declares more pixels than the reader's limit."""


def read_image(
    source: ImageSource,
    *,
    channels: int,
    size: int | None = None,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """One picture → uint8 (H, W, C) with C = ``channels`` (1 or 3), by the module's rule.

    ``size``: resize the centred square to ``size``×``size`` (None keeps the picture's own size). ``name`` is how
    refusals call the picture (default: the path, or "the image"). Raises `UnreadableImage` or `ImageTooLarge`, both
    one-line `ArgenError`s.
    """
    if channels not in (1, 3):
        raise ArgenError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    name = name or (str(source) if isinstance(source, (str, os.PathLike)) else "the image")
    mode = "RGB" if channels == 3 else "L"
    with open_image(source, name=name) as image:
        if size is not None:
            image.draft(mode, (size, size))  # JPEG only; changes image.size to what will be decoded
        check_pixels(image, name=name, max_pixels=max_pixels)
        try:
            # load() decodes every byte now, so a truncated file fails here instead of turning into a grey half image.
            image.load()
            image = ImageOps.exif_transpose(image)
            image = convert_mode(image, mode)
            if size is not None and image.size != (size, size):
                image = resize_square(image, size)
            pixels = np.asarray(image)
        except Image.DecompressionBombError:
            raise ImageTooLarge(f"{name} has too many pixels (over {max_pixels}): scale it down first") from None
        except DECODE_ERRORS as error:
            raise UnreadableImage(f"{name} is truncated or corrupt ({first_line(error)}): save it anew") from None
    return pixels[..., None] if pixels.ndim == 2 else pixels


def image_size(source: ImageSource, *, name: str | None = None) -> tuple[int, int]:
    """(W, H) as the picture's header declares it, after the EXIF orientation; no pixel is decoded."""
    name = name or (str(source) if isinstance(source, (str, os.PathLike)) else "the image")
    with open_image(source, name=name) as image:
        width, height = image.size
        # PNG's getexif() decodes every pixel to look for an eXIf chunk after the data: its orientation (rare in
        # PNGs) is read only where the header holds it; JPEG, WebP and TIFF keep EXIF in the header.
        header_exif = image.format != "PNG" or "exif" in image.info
        orientation = image.getexif().get(0x0112, 1) if header_exif else 1
        return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


@contextmanager
def open_image(source: ImageSource, *, name: str) -> Iterator[Image.Image]:
    """The PIL image of ``source``, header read, pixels not decoded; a PIL image passes through unchanged."""
    if isinstance(source, Image.Image):
        yield source
        return
    if isinstance(source, (bytes, bytearray)):
        stream = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        stream = open_regular_file(Path(source), name=name)
    else:
        raise ArgenError(f"{name}: pass a path, bytes or a PIL image, not {type(source).__name__}")
    with stream:
        try:
            image = Image.open(stream, formats=FORMATS)
        except Image.DecompressionBombError:
            raise ImageTooLarge(f"{name} has too many pixels: scale it down first") from None
        except (UnidentifiedImageError, *DECODE_ERRORS) as error:
            formats = ", ".join(FORMATS)
            reason = "not an image" if isinstance(error, UnidentifiedImageError) else first_line(error)
            raise UnreadableImage(f"{name} cannot be read as an image ({reason}): use one of {formats}") from None
        with image:
            yield image


def open_regular_file(path: Path, *, name: str) -> io.BufferedReader:
    """``path`` opened for reading when it is a regular file; a FIFO, device or socket is refused unopened."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UnreadableImage(f"{name} is not a regular file (a FIFO, device, socket or directory): remove it")
        # O_NONBLOCK: should a FIFO replace the file between the check and here, opening it does not block.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise UnreadableImage(f"{name} does not exist") from None
    except OSError as error:
        raise UnreadableImage(f"cannot open {name}: {error.strerror or error}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UnreadableImage(f"{name} is not a regular file (a FIFO, device, socket or directory): remove it")
    return os.fdopen(descriptor, "rb")


def check_pixels(image: Image.Image, *, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"{name} is {width}×{height} pixels; the limit is {max_pixels} pixels: scale it down first")


def convert_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` in ``mode`` ("L" or "RGB") by steps 3-5 of the module's rule (depth, transparency on white, colour)."""
    if image.mode in DEEP_MODES:
        scaled = (np.asarray(image, dtype=np.float32) / 257).round().clip(0, 255).astype(np.uint8)
        image = Image.fromarray(scaled)
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image, dtype=np.float32).round().clip(0, 255).astype(np.uint8))
    if image.mode in PREMULTIPLIED_MODES:
        # PIL converts neither mode: composite by hand, colour premultiplied by alpha plus white where transparent.
        array = np.asarray(image).astype(np.int32)
        composited = array[..., :-1] + (255 - array[..., -1:])
        composited = composited.clip(0, 255).astype(np.uint8)
        image = Image.fromarray(composited[..., 0] if composited.shape[-1] == 1 else composited)
    elif image.mode in ALPHA_MODES or "transparency" in image.info:
        foreground = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", foreground.size, (255, 255, 255, 255)), foreground)
    if image.mode == "LAB":
        image = lab_to_rgb(image)
    if image.mode == mode:
        return image
    if image.mode not in ("L", "RGB", "RGBA", "1"):
        image = image.convert("RGB")  # palette, CMYK, YCbCr, HSV: through RGB, whatever ``mode`` is
    return image if image.mode == mode else image.convert(mode)


def lab_to_rgb(image: Image.Image) -> Image.Image:
    """CIE LAB → sRGB through a colour transform: PIL's convert() has no LAB conversion."""
    from PIL import ImageCms

    try:
        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
        return ImageCms.applyTransform(image, transform)
    except (ImageCms.PyCMSError, OSError, ValueError) as error:
        raise UnreadableImage(f"a LAB image cannot be converted here ({first_line(error)}): save it as RGB") from None


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """The centred square of ``image`` resized to ``size``×``size``, bicubic."""
    width, height = image.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    # reducing_gap trades an invisible amount of quality for speed on large photos (see PIL's Image.resize).
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def as_images(
    images: torch.Tensor | Image.Image | Sequence[Image.Image | torch.Tensor], *, channels: int
) -> torch.Tensor:
    """PIL image(s) or a uint8 tensor (B, C, H, W) / (C, H, W) → uint8 (B, C, H, W) with ``channels`` channels.

    PIL images go through `read_image` at their own size; tensors are taken as they are.
    """
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, torch.Tensor):
        tensor = images if images.dim() == 4 else images.unsqueeze(0)
        if tensor.dtype != torch.uint8 or tensor.dim() != 4:
            shape = tuple(images.shape)
            raise ArgenError(f"images must be uint8 (B, C, H, W) tensors or PIL images, got {tensor.dtype} {shape}")
        if tensor.shape[1] != channels:
            raise ArgenError(f"the images have {tensor.shape[1]} channels and the model {channels}: convert them")
        return tensor
    if not isinstance(images, (list, tuple)) or not images:
        raise ArgenError("pass images as a PIL image, a list of them, or a uint8 (B, C, H, W) tensor")
    if all(isinstance(image, torch.Tensor) for image in images):
        return torch.cat([as_images(image, channels=channels) for image in images])
    arrays = []
    for image in images:
        if not isinstance(image, Image.Image):
            raise ArgenError(f"expected PIL images, got {type(image).__name__}")
        arrays.append(read_image(image, channels=channels).transpose(2, 0, 1))
    if len({array.shape for array in arrays}) > 1:
        raise ArgenError("the images differ in size: edit images of one size together")
    return torch.from_numpy(np.stack(arrays)).contiguous()


def first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
