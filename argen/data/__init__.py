"""Image sources as uint8 tensors in memory: Fashion-MNIST, MNIST, CIFAR-10, and folders or archives of image files.

Every source becomes one `ImageDataset` (``dataset.py``) holding ``images`` uint8 (N, C, H, W) with C 1 or 3, and
``labels`` int64 (N,) or None. The ``spec`` string names the source:

- ``fashion-mnist`` and ``mnist`` (``idx.py``): the IDX files, found locally (`find_idx_files` gives the search
  order) or downloaded once into the cache with their official md5 checked before they are moved into place.
- ``cifar10`` (``cifar10.py``): the official *binary* release (never the pickled python one), found the same way
  (``--data-dir``, ``$ARGEN_DATA/cifar10`` or ``~/.cache/argen/cifar10``; unpacked or as ``cifar-10-binary.tar.gz``,
  read without unpacking) or downloaded once into the cache with its published md5 checked.
- ``folder:PATH`` (``folder.py``): every PNG/JPEG/WebP/BMP under PATH, one first-level subfolder per class (the
  ImageFolder convention), with ``train/`` and ``test/`` subfolders as the splits when both exist and otherwise a
  seeded 10 % test split that is the same on every machine. PATH may also be a ``.tar``, ``.tar.gz`` or ``.tgz``
  archive of such a folder (``archive.py``), read without unpacking; links, devices and paths leaving the archive
  are skipped and counted.

Decoded-image cache (``decoded_cache.py``): a folder or archive is decoded once per split, image size and channel
count, and later loads read the arrays back from ``$ARGEN_DATA/decoded/`` (``~/.cache/argen/decoded/`` without
ARGEN_DATA), keyed by the source's content (an archive's sha256; a folder's file names, sizes and times). Clear it
by deleting that directory; ``ARGEN_NO_CACHE=1`` or ``load_dataset(..., cache=False)`` turns it off.

Beside the sources: ``pixels.py`` (uint8 ⇄ [-1, 1] floats, batched resizing) and ``files.py`` (image grids, npz
archives of images). No file is trusted: IDX headers are checked against the data they describe, and every image
file is decoded in full while the dataset is built. A broken IDX file raises an `ArgenError` naming it; a broken
image file is skipped and counted, so one bad file never costs a whole folder.
"""

from __future__ import annotations

from pathlib import Path

from argen.data.archive import is_archive, load_archive
from argen.data.cifar10 import CIFAR10_NAME, find_cifar10, load_cifar10
from argen.data.dataset import SPLITS, ImageDataset
from argen.data.decoded_cache import decoded_cache_directory, load_with_cache
from argen.data.files import image_grid, load_images_npz, save_images_npz
from argen.data.folder import FOLDER_CHANNELS, FOLDER_IMAGE_SIZE, load_folder
from argen.data.idx import IDX_SOURCES, cache_directory, find_idx_files, load_idx
from argen.data.pixels import float_to_images, images_to_float, resize_tensor_images
from argen.errors import ArgenError

# The sources named by a word, each with its loader (all take the arguments `load_dataset` passes on).
NAMED_SOURCES = {**dict.fromkeys(IDX_SOURCES, load_idx), CIFAR10_NAME: load_cifar10}


def load_dataset(
    spec: str,
    *,
    split: str = "train",
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    download: bool = True,
    verbose: bool = False,
    progress: bool = True,
    cache: bool = True,
) -> ImageDataset:
    """Load one split of ``spec`` (``fashion-mnist``, ``mnist``, ``cifar10`` or ``folder:PATH``) as uint8 tensors.

    ``image_size`` and ``channels`` default to the source's native ones for named sources (28 and 1 for IDX, 32 and
    3 for CIFAR-10) and to 32 and 3 for folders; anything else is resized (shorter side, then centre crop) and
    converted. ``data_dir`` is the first place a named source's files are looked for; ``download`` allows fetching
    them when they are nowhere local. ``verbose`` lists skipped files and says where files came from; ``progress``
    shows bars while downloading or decoding; ``cache`` False (or ARGEN_NO_CACHE=1) decodes a folder or archive
    without reading or writing the decoded-image cache.
    """
    if split not in SPLITS:
        raise ArgenError(f"split must be 'train' or 'test', got {split!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ArgenError(f"image size must be a positive whole number of pixels, got {image_size!r}")
    if channels is not None and channels not in (1, 3):
        raise ArgenError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if spec.startswith("folder:"):
        path = Path(spec.removeprefix("folder:")).expanduser()
        image_size = FOLDER_IMAGE_SIZE if image_size is None else image_size
        channels = FOLDER_CHANNELS if channels is None else channels
        load = load_archive if is_archive(path) else load_folder
        return load_with_cache(
            spec,
            path,
            split=split,
            image_size=image_size,
            channels=channels,
            load=lambda: load(
                spec, split=split, image_size=image_size, channels=channels, verbose=verbose, progress=progress
            ),
            cache=cache,
            verbose=verbose,
        )
    if spec.lower() in NAMED_SOURCES:
        return NAMED_SOURCES[spec.lower()](
            spec,
            split=split,
            data_dir=data_dir,
            image_size=image_size,
            channels=channels,
            download=download,
            verbose=verbose,
            progress=progress,
        )
    valid = ", ".join([*NAMED_SOURCES, "folder:PATH"])
    raise ArgenError(f"unknown data source {spec!r}; use one of: {valid}")


__all__ = [
    "IDX_SOURCES",
    "NAMED_SOURCES",
    "SPLITS",
    "ImageDataset",
    "cache_directory",
    "decoded_cache_directory",
    "find_cifar10",
    "find_idx_files",
    "float_to_images",
    "image_grid",
    "images_to_float",
    "load_dataset",
    "load_images_npz",
    "resize_tensor_images",
    "save_images_npz",
]
