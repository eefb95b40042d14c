"""Folder source, ``folder:PATH``: every PNG/JPEG/WebP/BMP under PATH, one first-level subfolder per class.

The ImageFolder convention, with ``train/`` and ``test/`` subfolders as the splits when both exist and otherwise a
seeded 10 % test split that is the same on every machine. Every image file is decoded in full while the dataset is
built; a broken one is skipped and counted, so one bad file never costs a whole folder.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path, PurePath

import numpy as np
import torch
from tqdm import tqdm

from argen.data.dataset import SPLITS, ImageDataset, one_line
from argen.data.images import read_image
from argen.errors import ArgenError, ArgenWarning

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


FOLDER_CHANNELS = 3


FOLDER_IMAGE_SIZE = 32


FOLDER_TEST_FRACTION = 0.1


# Part of the hash that ranks files for the seeded split; changing it reshuffles every user's split.
FOLDER_SPLIT_SEED = "argen-folder-split-1"


def load_folder(
    spec: str, *, split: str, image_size: int, channels: int, verbose: bool, progress: bool
) -> ImageDataset:
    folder = Path(spec.removeprefix("folder:")).expanduser()
    if not folder.is_dir():
        raise ArgenError(
            f"{spec}: {folder} is not a directory; pass folder:PATH with PATH a directory of images or a .tar, "
            ".tar.gz or .tgz archive of one"
        )
    explicit_splits = (folder / "train").is_dir() and (folder / "test").is_dir()
    roots = [folder / name for name in SPLITS] if explicit_splits else [folder]
    root = folder / split if explicit_splits else folder
    listings = [list_image_files(each_root) for each_root in roots]
    files, labels, classes = select_split(
        spec, split=split, where=str(root), listings=listings, explicit_splits=explicit_splits
    )
    decoded = decode_images(root, files, image_size=image_size, channels=channels, progress=progress)
    where = str(root)
    return split_dataset(
        spec, split=split, where=where, files=files, labels=labels, classes=classes, decoded=decoded, verbose=verbose
    )


def select_split(
    spec: str, *, split: str, where: str, listings: list[list[PurePath]], explicit_splits: bool
) -> tuple[list[PurePath], list[int] | None, list[str]]:
    """The files of ``split`` (relative to its root ``where``), their labels, and the class names.

    ``listings`` holds each split root's files: train/ then test/ with ``explicit_splits``, else the one root (split
    here by `seeded_split`). Every listing names classes, so a class missing from one split still gets the index it
    has in the other. Shared by folders and archives (``archive.py``).
    """
    files = listings[SPLITS.index(split)] if explicit_splits else listings[0]
    classes = sorted({path.parts[0] for listing in listings for path in listing if len(path.parts) > 1})
    labels: list[int] | None = None
    if classes:
        in_root = [path for path in files if len(path.parts) == 1]
        if in_root:
            warnings.warn(
                f"{spec}: ignored {len(in_root)} image file(s) directly in {where}; in a folder with class "
                "subfolders every image must be inside one",
                ArgenWarning,
                stacklevel=4,
            )
        files = [path for path in files if len(path.parts) > 1]
        class_index = {name: index for index, name in enumerate(classes)}
        labels = [class_index[path.parts[0]] for path in files]
    if not files:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise ArgenError(f"{spec}: no image files ({extensions}) under {where}; point folder: at a directory of images")
    if not explicit_splits:
        files, labels = seeded_split(files, labels, split=split)
        if not files:
            raise ArgenError(
                f"{spec}: too few images under {where} to hold out a test split; add images, or make train/ and test/ "
                "subfolders"
            )
    return files, labels, classes


def split_dataset(
    spec: str,
    *,
    split: str,
    where: str,
    files: list[PurePath],
    labels: list[int] | None,
    classes: list[str],
    decoded: tuple[np.ndarray, list[int], list[tuple[str, str]]],
    verbose: bool,
) -> ImageDataset:
    """The dataset from ``decoded`` = (images, indices of ``files`` kept, (path, reason) skipped), warning of skips."""
    images, kept, skipped = decoded
    if skipped:
        hint = "" if verbose else "; pass --verbose to list them"
        warnings.warn(
            f"{spec} [{split}]: skipped {len(skipped)} unreadable image file(s) (corrupt, truncated, empty, too large "
            f"or not a regular file){hint}",
            ArgenWarning,
            stacklevel=4,
        )
        if verbose:
            for path, reason in skipped:
                print(f"  skipped {path}: {reason}", file=sys.stderr)
    if not kept:
        raise ArgenError(
            f"{spec}: none of the {len(files)} {split} image files under {where} could be decoded; replace them or "
            "point folder: at another directory"
        )
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=None if labels is None else torch.tensor([labels[index] for index in kept], dtype=torch.int64),
        classes=classes,
        skipped=[path for path, _ in skipped],
        spec=spec,
        split=split,
    )


def list_image_files(root: Path) -> list[Path]:
    """Image files under ``root``, recursive, as paths relative to it, sorted so every machine sees one order.

    Hidden files and folders are left out: they are editor, notebook or macOS metadata (``._photo.jpg``), not data.
    """
    if not root.is_dir():
        return []
    found = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        relative = Path(directory).relative_to(root)
        for name in names:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(relative / name)
    return sorted(found, key=lambda path: path.as_posix())


def seeded_split(files: list[Path], labels: list[int] | None, *, split: str) -> tuple[list[Path], list[int] | None]:
    """The ``split`` part of a folder without train/ and test/: 10 % of each class held out for test.

    Files are ranked by a hash of their relative path, so the split is the same on every machine and a file keeps
    its side when the folder moves. Per class, so that every class with two or more images appears in both splits.
    """
    groups: dict[int | None, list[Path]] = {}
    for index, path in enumerate(files):
        groups.setdefault(None if labels is None else labels[index], []).append(path)
    test_files = set()
    for group in groups.values():
        count = 0 if len(group) < 2 else max(1, round(len(group) * FOLDER_TEST_FRACTION))
        ranked = sorted(group, key=split_rank)
        test_files.update(ranked[:count])
    keep = [index for index, path in enumerate(files) if (path in test_files) == (split == "test")]
    return [files[index] for index in keep], None if labels is None else [labels[index] for index in keep]


def split_rank(path: Path) -> bytes:
    return hashlib.sha256(f"{FOLDER_SPLIT_SEED}/{path.as_posix()}".encode()).digest()


def decode_images(
    root: Path, files: list[Path], *, image_size: int, channels: int, progress: bool
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode ``files`` (relative to ``root``) into uint8 (N, C, S, S); returns it, kept indices, (path, reason)s."""
    images = np.empty((len(files), channels, image_size, image_size), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    for index, relative in enumerate(tqdm(files, desc="decoding images", unit="image", disable=not progress)):
        path = root / relative
        try:
            pixels = decode_image(path, image_size=image_size, channels=channels)
        # Broad on purpose: the reader turns what it knows into ArgenError, but a decoder may still raise
        # struct.error and the like, and any of them means this one file is unusable, not that the run should stop.
        except Exception as error:
            skipped.append((str(path), one_line(error)))
            continue
        images[len(kept)] = pixels if channels == 3 else pixels[None]
        kept.append(index)
    # Copy only when something was skipped, so a full load keeps one buffer rather than two.
    return (images if len(kept) == len(files) else images[: len(kept)].copy()), kept, skipped


def decode_image(path: Path | bytes, *, image_size: int, channels: int) -> np.ndarray:
    """One image file or its bytes → uint8 (S, S) (1 channel) or (C, S, S) (3), by `argen.data.images.read_image`."""
    pixels = read_image(path, channels=channels, size=image_size)  # (S, S, C)
    return pixels.transpose(2, 0, 1) if channels == 3 else pixels[..., 0]
