"""CIFAR-10 from its official binary release (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images").

The binary version only, never the python one: that one is pickled, and unpickling a downloaded file runs whatever
code it holds. ``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/`` with ``data_batch_1.bin`` …
``data_batch_5.bin`` (train), ``test_batch.bin`` (test) and ``batches.meta.txt`` (the class names, one a line). Each
``.bin`` file is a run of 3 073-byte records: 1 label byte, then the 32×32 red plane, green plane and blue plane,
each row by row from the top.

Searched in order (`cifar10_search_directories`): ``--data-dir`` and ``--data-dir/cifar10``, then
``$ARGEN_DATA/cifar10`` or ``~/.cache/argen/cifar10`` (where the download goes). In each, the unpacked
``cifar-10-batches-bin/`` folder (or its files directly) or the archive itself, which is read without unpacking.
Local copies are checked structurally (whole records, labels that name a class); downloads against the md5 the
dataset's page publishes, before they are moved into place.
"""

from __future__ import annotations

import http.client
import sys
import tarfile
import urllib.error
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from argen.data.dataset import ImageDataset, one_line
from argen.data.idx import cache_directory, download_file
from argen.data.pixels import resize_tensor_images
from argen.errors import ArgenError, ArgenWarning

# Everything a download needs, in one literal so tests can point it at a local server. The md5 is the one
# https://www.cs.toronto.edu/~kriz/cifar.html publishes for the binary version (torchvision's cifar.py lists the
# same page's md5 for the python version).
CIFAR10_SOURCE = {
    "url": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    "md5": "c32a1d4ab5d03f1284b67883e8d87530",
}

CIFAR10_NAME = "cifar10"

CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"

CIFAR10_DIRECTORY = "cifar-10-batches-bin"

CIFAR10_FILES = {
    "train": tuple(f"data_batch_{index}.bin" for index in range(1, 6)),
    "test": ("test_batch.bin",),
}

CIFAR10_META = "batches.meta.txt"

CIFAR10_SIDE = 32

# One label byte, then three 32×32 colour planes.
CIFAR10_RECORD_BYTES = 1 + 3 * CIFAR10_SIDE * CIFAR10_SIDE

NEEDED_FILES = (*CIFAR10_FILES["train"], *CIFAR10_FILES["test"], CIFAR10_META)


def cifar10_search_directories(data_dir: str | Path | None) -> list[Path]:
    """``data_dir`` and ``data_dir/cifar10`` when given, then ``$ARGEN_DATA/cifar10`` or ``~/.cache/argen/cifar10``."""
    directories = []
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        directories += [data_dir, data_dir / CIFAR10_NAME]
    return [*directories, cache_directory(CIFAR10_NAME)]


def find_cifar10(data_dir: str | Path | None = None) -> Path | None:
    """The first local copy of the binary release: a directory holding its files, or the archive; None if none."""
    for directory in cifar10_search_directories(data_dir):
        for candidate in (directory / CIFAR10_DIRECTORY, directory):
            if all((candidate / name).is_file() for name in NEEDED_FILES):
                return candidate
        if (directory / CIFAR10_ARCHIVE).is_file():
            return directory / CIFAR10_ARCHIVE
    return None


def load_cifar10(
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
    """One split of CIFAR-10 as uint8 (N, 3, 32, 32) images (resized/converted on request) and int64 (N,) labels."""
    location = find_cifar10(data_dir)
    if location is None:
        location = download_cifar10(data_dir=data_dir, download=download, progress=progress)
    searched = cifar10_search_directories(data_dir)
    if data_dir is not None and not any(location.is_relative_to(directory) for directory in searched[:2]):
        # An explicit --data-dir that holds nothing is probably a typo; say which copy is used instead.
        warnings.warn(f"no CIFAR-10 binary release in {data_dir}; using {location}", ArgenWarning, stacklevel=3)
    if verbose:
        print(f"{spec} [{split}]: binary release from {location}", file=sys.stderr)
    contents = read_release_files(location, [*CIFAR10_FILES[split], CIFAR10_META])
    classes = parse_class_names(contents.pop(CIFAR10_META), location / CIFAR10_META)
    images, labels = [], []
    for name, data in contents.items():
        batch_images, batch_labels = parse_records(data, location / name)
        if batch_labels.max() >= len(classes):
            raise ArgenError(
                f"{location / name} has label {batch_labels.max()} but {CIFAR10_META} names {len(classes)} classes; "
                "replace it with an intact copy"
            )
        images.append(batch_images)
        labels.append(batch_labels)
    pixels = resize_tensor_images(torch.from_numpy(np.concatenate(images)), image_size=image_size, channels=channels)
    return ImageDataset(
        images=pixels,
        labels=torch.from_numpy(np.concatenate(labels).astype(np.int64)),
        classes=classes,
        skipped=[],
        spec=spec,
        split=split,
    )


def read_release_files(location: Path, names: list[str]) -> dict[str, bytes]:
    """``names`` from an unpacked release directory or from the archive (members read, nothing written to disk)."""
    if location.is_dir():
        try:
            return {name: (location / name).read_bytes() for name in names}
        except OSError as error:
            raise ArgenError(f"cannot read {location} ({one_line(error)}); replace it with an intact copy") from None
    contents = {}
    try:
        with tarfile.open(location, "r:*") as archive:
            for name in names:
                member = archive.getmember(f"{CIFAR10_DIRECTORY}/{name}")
                stream = archive.extractfile(member) if member.isreg() else None
                if stream is None:
                    raise ArgenError(f"{location}: {member.name} is not a regular file; replace it with an intact copy")
                contents[name] = stream.read()
    except KeyError as error:
        raise ArgenError(
            f"{location} has no member {one_line(error)}; it is not the CIFAR-10 binary release, replace it"
        ) from None
    except (OSError, EOFError, zlib.error, tarfile.TarError) as error:
        raise ArgenError(f"cannot read {location} ({one_line(error)}); replace it with an intact copy") from None
    return contents


def parse_records(data: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A ``.bin`` file's bytes → images uint8 (N, 3, 32, 32) and labels uint8 (N,), after checking whole records."""
    if not data or len(data) % CIFAR10_RECORD_BYTES:
        raise ArgenError(
            f"{path} holds {len(data)} bytes, not a whole number of {CIFAR10_RECORD_BYTES}-byte records; it is "
            "truncated or corrupt, replace it with an intact copy"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    images = records[:, 1:].reshape(-1, 3, CIFAR10_SIDE, CIFAR10_SIDE)
    # Copies, because torch refuses to share memory with the read-only bytes object.
    return images.copy(), records[:, 0].copy()


def parse_class_names(data: bytes, path: Path) -> list[str]:
    names = [line.strip() for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not names:
        raise ArgenError(f"{path} names no classes; replace it with an intact copy")
    return names


def download_cifar10(*, data_dir: str | Path | None, download: bool, progress: bool) -> Path:
    """Download the binary archive into ``cache_directory("cifar10")``, checked against its md5; returns its path."""
    path = cache_directory(CIFAR10_NAME) / CIFAR10_ARCHIVE
    if not download:
        raise cifar10_missing_error(data_dir, reason="downloading is off")
    url = CIFAR10_SOURCE["url"]
    try:
        download_file(url, path, md5=CIFAR10_SOURCE["md5"], progress=progress)
    except (OSError, http.client.HTTPException) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise cifar10_missing_error(data_dir, reason=f"downloading {url} failed ({one_line(reason)})") from None
    return path


def cifar10_missing_error(data_dir: str | Path | None, *, reason: str) -> ArgenError:
    searched = ", ".join(str(directory) for directory in cifar10_search_directories(data_dir))
    return ArgenError(
        f"CIFAR-10 binary release not found (searched {searched}) and {reason}; provide it one of three ways: pass "
        f"--data-dir DIR holding {CIFAR10_ARCHIVE} or its unpacked {CIFAR10_DIRECTORY}/ folder, put either in "
        f"$ARGEN_DATA/{CIFAR10_NAME} or ~/.cache/argen/{CIFAR10_NAME}, or connect to the internet so argen can "
        "download it (162 MB)"
    )
