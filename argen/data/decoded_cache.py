"""Decoded-array cache: a folder or archive of image files is decoded once, and later loads read the arrays back.

Where it lives: ``$ARGEN_DATA/decoded/``, or ``~/.cache/argen/decoded/`` without ARGEN_DATA (beside the IDX and
CIFAR-10 downloads, `cache_directory`), one ``<key>.npz`` per source, split, image size and channel count: about
N×C×S×S bytes, 150 MB for CIFAR-10's train split at 32×32 RGB. Nothing else reads it, so clearing it is deleting
the directory (``rm -r ~/.cache/argen/decoded``); ``ARGEN_NO_CACHE=1`` (or ``load_dataset(..., cache=False)``)
neither reads nor writes it.

The key is a sha256 of the source's content and everything the arrays depend on: for an archive, the whole file's
sha256 (hashing reads at disk speed, far cheaper than decoding what it holds); for a folder, the sorted (relative
path, size, mtime) of every image file under it, so adding, removing or rewriting a file makes a new entry; then
the source's resolved path (skipped files and warnings name it), the split, image size, channels, the Pillow version
that decoded the images, the seeded split's seed and `CACHE_FORMAT`. An entry holds arrays of numbers and strings
only, is read with ``np.load(allow_pickle=False)`` and checked against its key, and is written atomically, so an
interrupted run leaves no half entry; an unreadable entry is decoded again and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL
import torch

from argen.checkpoint import atomic_write
from argen.data.dataset import ImageDataset, one_line
from argen.data.folder import FOLDER_SPLIT_SEED, FOLDER_TEST_FRACTION, list_image_files
from argen.data.idx import cache_directory
from argen.errors import ArgenWarning

# Bump when what an entry holds, or how images are decoded, changes: old entries are then never read again.
CACHE_FORMAT = 1

# What every entry holds; "labels" (int64 (N,)) too when the source is labelled.
ENTRY_ARRAYS = frozenset({"key", "images", "classes", "skipped", "warnings"})


def decoded_cache_directory() -> Path:
    """``$ARGEN_DATA/decoded``, or ``~/.cache/argen/decoded`` without ARGEN_DATA."""
    return cache_directory("decoded")


def cache_enabled(cache: bool = True) -> bool:
    """False when ``cache`` is False or the environment sets ARGEN_NO_CACHE to anything but "" or "0"."""
    return cache and os.environ.get("ARGEN_NO_CACHE", "") in ("", "0")


def content_digest(path: Path) -> str | None:
    """sha256 of an archive's bytes, or of a folder's sorted (relative path, size, mtime) list; None for neither."""
    digest = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()
    if not path.is_dir():
        return None
    for relative in list_image_files(path):
        status = (path / relative).stat()
        digest.update(
            f"{relative.as_posix()}\0{status.st_size}\0{status.st_mtime_ns}\n".encode(errors="surrogateescape")
        )
    return digest.hexdigest()


def cache_key(path: Path, *, split: str, image_size: int, channels: int) -> str | None:
    """The entry's name for ``path``'s ``split`` at this size and channel count; None when ``path`` does not exist."""
    content = content_digest(path)
    if content is None:
        return None
    settings = {
        "format": CACHE_FORMAT,
        "content": content,
        "path": str(path.resolve()),
        "split": split,
        "image_size": image_size,
        "channels": channels,
        "pillow": PIL.__version__,
        "split_seed": FOLDER_SPLIT_SEED,
        "test_fraction": FOLDER_TEST_FRACTION,
    }
    text = json.dumps(settings, sort_keys=True).encode(errors="surrogateescape")
    return hashlib.sha256(text).hexdigest()[:32]


def load_with_cache(
    spec: str,
    path: Path,
    *,
    split: str,
    image_size: int,
    channels: int,
    load: Callable[[], ImageDataset],
    cache: bool,
    verbose: bool,
) -> ImageDataset:
    """``load()``'s dataset, read from the cache when an entry matches and stored there after a decode.

    Warnings ``load()`` gave (skipped files, ignored files) are kept with the entry and given again on every read.
    """
    key = cache_key(path, split=split, image_size=image_size, channels=channels) if cache_enabled(cache) else None
    if key is None:
        return load()
    entry = decoded_cache_directory() / f"{key}.npz"
    dataset = read_entry(entry, key, spec=spec, split=split, image_size=image_size, channels=channels, verbose=verbose)
    if dataset is not None:
        return dataset
    record: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            dataset = load()
    finally:
        # Given again outside the recording, also when load() fails, so callers see exactly what they would have.
        for warning in record:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    messages = [str(warning.message) for warning in record if issubclass(warning.category, ArgenWarning)]
    write_entry(entry, key, dataset, messages)
    return dataset


def read_entry(
    entry: Path, key: str, *, spec: str, split: str, image_size: int, channels: int, verbose: bool
) -> ImageDataset | None:
    """The dataset an entry holds, or None when it is missing, unreadable or not what ``key`` promises."""
    try:
        with np.load(entry, allow_pickle=False) as arrays:
            stored = {name: arrays[name] for name in arrays.files}
    # A missing entry is the usual miss; a damaged one (interrupted disk, edited by hand) is decoded again.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if not ENTRY_ARRAYS <= stored.keys() or str(stored["key"]) != key:
        return None
    images, labels = stored["images"], stored.get("labels")
    if (
        images.dtype != np.uint8
        or images.shape[1:] != (channels, image_size, image_size)
        or (labels is not None and labels.shape != images.shape[:1])
    ):
        return None
    for message in stored["warnings"].tolist():
        warnings.warn(message, ArgenWarning, stacklevel=4)
    skipped = stored["skipped"].tolist()
    if verbose:
        print(f"{spec} [{split}]: {images.shape[0]} decoded images read from {entry}", file=sys.stderr)
        for path in skipped:
            print(f"  skipped {path}", file=sys.stderr)
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=None if labels is None else torch.from_numpy(labels.astype(np.int64)),
        classes=stored["classes"].tolist(),
        skipped=skipped,
        spec=spec,
        split=split,
    )


def write_entry(entry: Path, key: str, dataset: ImageDataset, messages: list[str]) -> None:
    """Store ``dataset`` under ``entry`` atomically; a cache that cannot be written costs a warning, not the run."""
    arrays = {
        "key": np.array(key),
        "images": dataset.images.numpy(),
        "classes": np.array(dataset.classes, dtype=str),
        "skipped": np.array(dataset.skipped, dtype=str),
        "warnings": np.array(messages, dtype=str),
    }
    if dataset.labels is not None:
        arrays["labels"] = dataset.labels.numpy()

    def write(temporary: Path) -> None:
        # A file object, because np.savez given a path appends ".npz" to the temporary name.
        with open(temporary, "wb") as stream:
            np.savez(stream, **arrays)

    try:
        atomic_write(entry, write)
    except OSError as error:
        warnings.warn(
            f"could not write the decoded-image cache {entry} ({one_line(error)}); the next load decodes again "
            "(set ARGEN_NO_CACHE=1 to stop trying)",
            ArgenWarning,
            stacklevel=4,
        )
