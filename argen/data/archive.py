"""Archive source, ``folder:ARCHIVE``: a .tar, .tar.gz or .tgz holding an ImageFolder layout, read without unpacking.

The layout and splits are those of a folder (``folder.py``): one first-level directory per class, ``train/`` and
``test/`` as the splits when both exist and otherwise the same seeded 10 % test split, so an archive and the folder
it was made from give the same images in the same order. One top-level directory holding everything (``tar czf
cifar10.tar.gz cifar10/``) is looked through. Nothing is written to disk and no member is trusted: links, devices,
FIFOs and paths that are absolute or climb out with ``..`` are skipped and counted, and a member that does not decode
as an image is skipped and counted like a broken file in a folder.
"""

from __future__ import annotations

import sys
import tarfile
import warnings
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from argen.data.dataset import SPLITS, ImageDataset, one_line
from argen.data.folder import IMAGE_EXTENSIONS, decode_image, select_split, split_dataset
from argen.errors import ArgenError, ArgenWarning

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    """Whether ``folder:PATH`` names an archive (by its suffix) rather than a directory."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def load_archive(
    spec: str, *, split: str, image_size: int, channels: int, verbose: bool, progress: bool
) -> ImageDataset:
    path = Path(spec.removeprefix("folder:")).expanduser()
    if not path.is_file():
        raise ArgenError(f"{spec}: {path} is not a file; pass folder:PATH with PATH an existing archive or directory")
    try:
        with tarfile.open(path, "r:*") as archive:
            images, unsafe = list_archive(archive)
            root, explicit_splits = archive_root(images)
            roots = [root / name for name in SPLITS] if explicit_splits else [root]
            split_root = root / split if explicit_splits else root
            listings = [files_under(images, each) for each in roots]
            where = f"{path}:{split_root.as_posix()}"
            files, labels, classes = select_split(
                spec, split=split, where=where, listings=listings, explicit_splits=explicit_splits
            )
            members = [images[split_root / name] for name in files]
            decoded = decode_members(archive, members, image_size=image_size, channels=channels, progress=progress)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as error:
        raise ArgenError(f"cannot read {path} ({one_line(error)}); replace it with an intact archive") from None
    if unsafe:
        hint = "" if verbose else "; pass --verbose to list them"
        warnings.warn(
            f"{spec}: skipped {len(unsafe)} archive member(s) that are not regular files or whose paths leave the "
            f"archive (links, devices, FIFOs, absolute or ../ paths){hint}",
            ArgenWarning,
            stacklevel=3,
        )
        if verbose:
            for name, reason in unsafe:
                print(f"  skipped {name}: {reason}", file=sys.stderr)
    dataset = split_dataset(
        spec, split=split, where=where, files=files, labels=labels, classes=classes, decoded=decoded, verbose=verbose
    )
    # As ARCHIVE:MEMBER, the way a folder's skipped files are named by their full path.
    dataset.skipped = [f"{path}:{name}" for name in [name for name, _ in unsafe] + dataset.skipped]
    return dataset


def list_archive(archive: tarfile.TarFile) -> tuple[dict[PurePosixPath, tarfile.TarInfo], list[tuple[str, str]]]:
    """The image members by normalised path, and the (name, reason) of every member skipped as unsafe.

    Hidden files and folders are left out, as in folders; so are directories and files that are not images.
    """
    images: dict[PurePosixPath, tarfile.TarInfo] = {}
    unsafe: list[tuple[str, str]] = []
    for member in archive.getmembers():
        # PurePosixPath drops "." parts and repeated slashes, so "./a//b.png" and "a/b.png" are one path.
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts:
            unsafe.append((member.name, "path leaves the archive"))
        elif member.isdir():
            continue
        elif not member.isreg():
            unsafe.append((member.name, "not a regular file (link, device or FIFO)"))
        elif name.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in name.parts):
            # A later member of the same name replaces an earlier one, as it would when unpacking.
            images[name] = member
    return images, unsafe


def archive_root(images: dict[PurePosixPath, tarfile.TarInfo]) -> tuple[PurePosixPath, bool]:
    """Where the layout starts (the top, or the one directory holding everything) and whether it has both splits."""
    root = PurePosixPath()
    tops = {name.parts[0] for name in images}
    if len(tops) == 1 and all(len(name.parts) > 1 for name in images) and not has_splits(images, root):
        root = PurePosixPath(tops.pop())
    return root, has_splits(images, root)


def files_under(images: dict[PurePosixPath, tarfile.TarInfo], root: PurePosixPath) -> list[PurePosixPath]:
    """The image paths under ``root``, relative to it, sorted as `list_image_files` sorts a folder's."""
    return sorted((name.relative_to(root) for name in images if name.is_relative_to(root)), key=PurePosixPath.as_posix)


def has_splits(images: dict[PurePosixPath, tarfile.TarInfo], root: PurePosixPath) -> bool:
    return all(any(name.is_relative_to(root / split) for name in images) for split in SPLITS)


def decode_members(
    archive: tarfile.TarFile, members: list[tarfile.TarInfo], *, image_size: int, channels: int, progress: bool
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode ``members`` into uint8 (N, C, S, S); returns it, the kept indices and the (name, reason) skipped.

    Read in archive order, because a compressed archive can only be read forwards without starting over.
    """
    images = np.empty((len(members), channels, image_size, image_size), dtype=np.uint8)
    decoded = np.zeros(len(members), dtype=bool)
    reasons: dict[int, str] = {}
    order = sorted(range(len(members)), key=lambda index: members[index].offset_data)
    for index in tqdm(order, desc="decoding images", unit="image", disable=not progress):
        # Reading is outside the try: an archive that cannot be read is an error, not a broken image.
        data = archive.extractfile(members[index]).read()
        try:
            pixels = decode_member(data, image_size=image_size, channels=channels)
        # Broad on purpose, as for files in folders: any failure means this one member is unusable.
        except Exception as error:
            reasons[index] = one_line(error)
            continue
        images[index] = pixels if channels == 3 else pixels[None]
        decoded[index] = True
    kept = np.flatnonzero(decoded).tolist()
    skipped = [(members[index].name, reasons[index]) for index in sorted(reasons)]
    return (images if len(kept) == len(members) else images[kept]), kept, skipped


def decode_member(data: bytes, *, image_size: int, channels: int) -> np.ndarray:
    """One member's bytes → uint8 (S, S) or (C, S, S), through the folders' decoder."""
    return decode_image(data, image_size=image_size, channels=channels)
