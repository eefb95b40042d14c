"""The one image reader (argen.data.images): modes, depth, transparency, EXIF, resizing, size limits, special files."""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from argen.data import load_dataset
from argen.data.images import ImageTooLarge, UnreadableImage, as_images, image_size, read_image


def encoded(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width×height (bilevel), with a valid CRC: a decompression bomb's header."""
    data = bytearray(encoded(Image.new("1", (8, 8))))
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


@pytest.mark.parametrize(
    ("mode", "colour", "grey"),
    [
        ("L", 77, 77),
        ("1", 1, 255),
        ("RGB", (10, 200, 30), None),
        ("CMYK", (0, 0, 0, 0), 255),
        ("YCbCr", (128, 128, 128), 128),
        ("HSV", (0, 0, 255), 255),
        ("I;16", 257 * 100, 100),
        ("I", 65535, 255),
        ("F", 42.4, 42),
        ("LAB", (255, 128, 128), 255),
    ],
)
def test_every_mode_becomes_uint8_in_one_or_three_channels(mode, colour, grey):
    image = Image.new(mode, (5, 3), colour)
    for channels in (1, 3):
        pixels = read_image(image, channels=channels)
        assert pixels.dtype == np.uint8 and pixels.shape == (3, 5, channels)
    if grey is not None:
        assert abs(int(read_image(image, channels=1)[0, 0, 0]) - grey) <= 1


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "La", "RGBa", "P-transparency", "L-transparency"])
def test_transparency_is_composited_onto_white(mode):
    if mode == "P-transparency":
        image = Image.new("P", (4, 4), 0)
        image.putpalette([0, 0, 0, 255, 0, 0])
        image.info["transparency"] = 0
    elif mode == "L-transparency":
        image = Image.new("L", (4, 4), 0)
        image.info["transparency"] = 0
    else:
        image = Image.new(mode, (4, 4), 0)  # every band 0: black, fully transparent
    assert (read_image(image, channels=3) == 255).all() and (read_image(image, channels=1) == 255).all()
    # The same through a PNG file's bytes, where PIL keeps the transparency.
    if mode in ("RGBA", "LA", "P-transparency", "L-transparency"):
        assert (read_image(encoded(image), channels=3) == 255).all()


def test_paths_bytes_and_pil_images_give_the_same_pixels(tmp_path):
    image = Image.effect_noise((40, 24), 60).convert("RGB")
    (tmp_path / "a.png").write_bytes(encoded(image))
    by_path = read_image(tmp_path / "a.png", channels=3, size=16)
    assert by_path.shape == (16, 16, 3)
    assert np.array_equal(by_path, read_image(encoded(image), channels=3, size=16))
    assert np.array_equal(by_path, read_image(image, channels=3, size=16))
    assert np.array_equal(read_image(image, channels=3), np.asarray(image))  # no size: the picture's own


def test_exif_orientation_is_applied_once_and_the_header_size_follows_it():
    image = Image.new("L", (6, 2), 0)
    image.paste(255, (0, 0, 1, 2))  # a white left column
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encoded(image, "JPEG", exif=exif, quality=100)
    pixels = read_image(data, channels=1)
    assert pixels.shape == (6, 2, 1) and image_size(data) == (2, 6)
    assert pixels[0].mean() > 200  # the white column became the top row


def test_pixel_limits_are_checked_before_decoding():
    with pytest.raises(ImageTooLarge, match=r"5000×5000 pixels; the limit is 1000000 pixels") as caught:
        read_image(png_declaring(5000, 5000), channels=1, max_pixels=1_000_000)
    assert "\n" not in str(caught.value)
    # Beyond PIL's own bomb limit: Image.open refuses it, and the refusal is the same kind.
    with pytest.raises(ImageTooLarge, match="scale it down"):
        read_image(png_declaring(100_000, 100_000), channels=1)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image", encoded(Image.new("L", (8, 8)))[:40], b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"],
)
def test_what_is_not_a_readable_picture_is_refused_in_one_line(data):
    with pytest.raises(UnreadableImage) as caught:
        read_image(data, channels=3)
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_never_opened_and_a_folder_skips_them(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(UnreadableImage, match="not a regular file"):
        read_image(tmp_path / "fifo.png", channels=3)  # would block forever if it were opened
    for index in range(12):
        Image.new("RGB", (8, 8), (index * 20, 0, 0)).save(tmp_path / f"{index}.png")
    result = {}
    worker = threading.Thread(target=lambda: result.update(dataset=load_dataset(f"folder:{tmp_path}", progress=False)))
    with pytest.warns(UserWarning, match="not a regular file"):
        worker.start()
        worker.join(timeout=60)
    assert not worker.is_alive(), "argen hung on a FIFO in an image folder"
    train = result["dataset"]
    test = load_dataset(f"folder:{tmp_path}", split="test", progress=False)
    assert len(train) + len(test) == 12 and [*train.skipped, *test.skipped] == [str(tmp_path / "fifo.png")]


def test_as_images_reads_pil_images_by_the_same_rule():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    tensor = as_images([image, image], channels=1)
    assert tensor.shape == (2, 1, 4, 4) and bool((tensor == 255).all())
