"""IDX sources: Fashion-MNIST and MNIST, found locally or downloaded once with their official md5 checked.

`find_idx_files` gives the search order (``--data-dir``, ``$ARGEN_DATA`` or ``~/.cache/argen``, Debian's package).
No file is trusted: IDX headers are checked against the data they describe, and a broken file raises an
`ArgenError` naming it.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import sys
import urllib.error
import urllib.request
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from argen.checkpoint import atomic_write
from argen.data.dataset import ImageDataset, one_line
from argen.data.pixels import resize_tensor_images
from argen.errors import ArgenError, ArgenWarning

# The official IDX sources. Only downloads are checked against these md5s: Debian's package recompresses the .gz
# files, so local copies are checked structurally instead (see `read_idx`). Tests point "url" and "md5" at a local
# server, which is why everything a download needs lives in this one literal.
IDX_SOURCES = {
    "fashion-mnist": {
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "classes": [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        "debian_dir": "/usr/share/datasets/fashion-mnist",
        "debian_package": "dataset-fashion-mnist",
    },
    "mnist": {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "classes": [str(digit) for digit in range(10)],
        "debian_dir": "/usr/share/datasets/mnist",
        "debian_package": None,
    },
}


# (images, labels) file names of each split, without the optional ".gz".
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_idx_files(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The first directory holding all four IDX files of ``name`` (each plain or .gz), or None.

    Searched in order: ``data_dir`` and ``data_dir/<name>``; ``$ARGEN_DATA/<name>`` when ARGEN_DATA is set, else
    ``~/.cache/argen/<name>`` (where downloads go); Debian's package directory (``/usr/share/datasets/<name>``).
    """
    for directory in idx_search_directories(name, data_dir):
        if all(idx_file(directory, stem) is not None for stems in IDX_FILES.values() for stem in stems):
            return directory
    return None


def idx_search_directories(name: str, data_dir: str | Path | None) -> list[Path]:
    source = idx_source(name)
    directories = []
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        directories += [data_dir, data_dir / name.lower()]
    return [*directories, cache_directory(name), Path(source["debian_dir"])]


def idx_source(name: str) -> dict:
    if name.lower() not in IDX_SOURCES:
        raise ArgenError(f"{name!r} has no IDX files; IDX sources are: {', '.join(IDX_SOURCES)}")
    return IDX_SOURCES[name.lower()]


def cache_directory(name: str) -> Path:
    """Where downloads of ``name`` go: ``$ARGEN_DATA/<name>``, or ``~/.cache/argen/<name>`` without ARGEN_DATA."""
    root = os.environ.get("ARGEN_DATA")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "argen"
    return base / name.lower()


def idx_file(directory: Path, stem: str) -> Path | None:
    # The plain file first: it reads without decompressing.
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx(
    spec: str,
    *,
    split: str,
    data_dir: str | Path | None,
    image_size: int | None,
    channels: int | None,
    download: bool,
    verbose: bool,
    progress: bool,
) -> ImageDataset:
    name = spec.lower()
    source = IDX_SOURCES[name]
    directory = find_idx_files(name, data_dir)
    if directory is None:
        directory = download_idx(name, data_dir=data_dir, download=download, progress=progress)
    if data_dir is not None and directory not in idx_search_directories(name, data_dir)[:2]:
        # An explicit --data-dir that holds nothing is probably a typo; say which files are used instead.
        warnings.warn(
            f"no {name} IDX files in {data_dir} or {Path(data_dir) / name}; using {directory}",
            ArgenWarning,
            stacklevel=3,
        )
    if verbose:
        print(f"{name} [{split}]: IDX files from {directory}", file=sys.stderr)
    images_path, labels_path = (idx_file(directory, stem) for stem in IDX_FILES[split])
    images = read_idx(images_path, dimensions=3)
    labels = read_idx(labels_path, dimensions=1)
    if labels.shape[0] != images.shape[0]:
        raise ArgenError(
            f"{labels_path} has {labels.shape[0]} labels but {images_path} has {images.shape[0]} images; "
            "replace them with a matching pair"
        )
    if labels.max() >= len(source["classes"]):
        raise ArgenError(
            f"{labels_path} has label {labels.max()} but {name} has {len(source['classes'])} classes; "
            "replace it with an intact copy"
        )
    pixels = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W)
    pixels = resize_tensor_images(pixels, image_size=image_size, channels=channels)
    return ImageDataset(
        images=pixels,
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=list(source["classes"]),
        skipped=[],
        spec=spec,
        split=split,
    )


def read_idx(path: Path, *, dimensions: int) -> np.ndarray:
    """An IDX file (plain or gzip) as a uint8 array, after checking its header against the data.

    IDX layout: two zero bytes, a type byte (0x08, unsigned bytes, the only type these datasets use), a byte with
    the number of dimensions, each dimension as a big-endian uint32, then the data in C order.
    """
    try:
        data = path.read_bytes()
        # Gzip is recognised by its magic bytes, not the suffix, so a misnamed file still reads.
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ArgenError(f"cannot read {path} ({one_line(error)}); replace it with an intact copy") from None
    expected_magic = bytes([0, 0, 0x08, dimensions])
    if data[:4] != expected_magic:
        raise ArgenError(
            f"{path} is not an IDX file of {dimensions}-D bytes (magic number {data[:4].hex() or 'missing'}, "
            f"expected {expected_magic.hex()}); replace it with an intact copy"
        )
    header_size = 4 + 4 * dimensions
    if len(data) < header_size:
        raise ArgenError(f"{path} ends inside its IDX header; it is truncated, replace it with an intact copy")
    sizes = struct.unpack(f">{dimensions}I", data[4:header_size])
    expected_size = math.prod(sizes)
    if len(data) - header_size != expected_size or expected_size == 0:
        shape = "×".join(map(str, sizes))
        raise ArgenError(
            f"{path} holds {len(data) - header_size} data bytes but its header says {shape} = {expected_size}; "
            "it is truncated or corrupt, replace it with an intact copy"
        )
    # A copy, because torch refuses to share memory with the read-only bytes object.
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(sizes).copy()


def download_idx(name: str, *, data_dir: str | Path | None, download: bool, progress: bool) -> Path:
    """Download the four .gz files of ``name`` into its cache directory, each checked against its md5."""
    source = IDX_SOURCES[name]
    directory = cache_directory(name)
    if not download:
        raise idx_missing_error(name, data_dir, reason="downloading is off")
    for file_name, md5 in source["md5"].items():
        if idx_file(directory, file_name.removesuffix(".gz")) is not None:
            continue  # kept from an earlier, interrupted run; it was verified before it was moved into place
        url = source["url"].rstrip("/") + "/" + file_name
        try:
            download_file(url, directory / file_name, md5=md5, progress=progress)
        except (OSError, http.client.HTTPException) as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            raise idx_missing_error(name, data_dir, reason=f"downloading {url} failed ({one_line(reason)})") from None
    return directory


def download_file(url: str, path: Path, *, md5: str, progress: bool) -> None:
    """Stream ``url`` into a temporary file beside ``path`` and move it onto ``path`` only if its md5 matches.

    A failed or mismatched download leaves neither the temporary file nor ``path`` behind (`atomic_write`).
    """

    def write(temporary: Path) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        with urllib.request.urlopen(url, timeout=60) as response, open(temporary, "wb") as stream:
            length = response.headers.get("Content-Length")
            with tqdm(
                total=int(length) if length else None,
                desc=f"downloading {path.name}",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not progress,
            ) as bar:
                while chunk := response.read(1 << 20):
                    stream.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise ArgenError(
                f"{url} has md5 {digest.hexdigest()}, expected {md5}, so it was not saved; retry later, or download "
                f"{path.name} yourself and pass --data-dir DIR"
            )

    atomic_write(path, write)


def idx_missing_error(name: str, data_dir: str | Path | None, *, reason: str) -> ArgenError:
    searched = ", ".join(str(directory) for directory in idx_search_directories(name, data_dir))
    package = IDX_SOURCES[name]["debian_package"]
    install = f"run `apt-get install {package}` or " if package else ""
    return ArgenError(
        f"{name} IDX files not found (searched {searched}) and {reason}; provide them one of three ways: "
        f"pass --data-dir DIR holding the four IDX files (plain or .gz), put them in $ARGEN_DATA/{name} or "
        f"~/.cache/argen/{name}, or {install}connect to the internet so argen can download them"
    )
