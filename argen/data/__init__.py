"""Image sources as uint8 tensors in memory: Fashion-MNIST, MNIST and folders of image files.

Every source becomes one `ImageDataset` (``dataset.py``) holding ``images`` uint8 (N, C, H, W) with C 1 or 3, and
``labels`` int64 (N,) or None. The ``spec`` string names the source:

- ``fashion-mnist`` and ``mnist`` (``idx.py``): the IDX files, found locally (`find_idx_files` gives the search
  order) or downloaded once into the cache with their official md5 checked before they are moved into place.
- ``folder:PATH`` (``folder.py``): every PNG/JPEG/WebP/BMP under PATH, one first-level subfolder per class (the
  ImageFolder convention), with ``train/`` and ``test/`` subfolders as the splits when both exist and otherwise a
  seeded 10 % test split that is the same on every machine.

Beside the sources: ``pixels.py`` (uint8 ⇄ [-1, 1] floats, batched resizing) and ``files.py`` (image grids, npz
archives of images). No file is trusted: IDX headers are checked against the data they describe, and every image
file is decoded in full while the dataset is built. A broken IDX file raises an `ArgenError` naming it; a broken
image file is skipped and counted, so one bad file never costs a whole folder.
"""

from __future__ import annotations

from pathlib import Path

from argen.data.dataset import SPLITS, ImageDataset
from argen.data.files import image_grid, load_images_npz, save_images_npz
from argen.data.folder import FOLDER_CHANNELS, FOLDER_IMAGE_SIZE, load_folder
from argen.data.idx import IDX_SOURCES, cache_directory, find_idx_files, load_idx
from argen.data.pixels import float_to_images, images_to_float, resize_tensor_images
from argen.errors import ArgenError


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
) -> ImageDataset:
    """Load one split of ``spec`` (``fashion-mnist``, ``mnist`` or ``folder:PATH``) as uint8 tensors.

    ``image_size`` and ``channels`` default to the source's native ones for IDX sources (28, 1) and to 32 and 3 for
    folders; anything else is resized (shorter side, then centre crop) and converted. ``data_dir`` is the first
    place IDX files are looked for; ``download`` allows fetching them when they are nowhere local. ``verbose``
    lists skipped files and says where IDX files came from; ``progress`` shows bars while downloading or decoding.
    """
    if split not in SPLITS:
        raise ArgenError(f"split must be 'train' or 'test', got {split!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ArgenError(f"image size must be a positive whole number of pixels, got {image_size!r}")
    if channels is not None and channels not in (1, 3):
        raise ArgenError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if spec.startswith("folder:"):
        return load_folder(
            spec,
            split=split,
            image_size=FOLDER_IMAGE_SIZE if image_size is None else image_size,
            channels=FOLDER_CHANNELS if channels is None else channels,
            verbose=verbose,
            progress=progress,
        )
    if spec.lower() in IDX_SOURCES:
        return load_idx(
            spec,
            split=split,
            data_dir=data_dir,
            image_size=image_size,
            channels=channels,
            download=download,
            verbose=verbose,
            progress=progress,
        )
    valid = ", ".join([*IDX_SOURCES, "folder:PATH"])
    raise ArgenError(f"unknown data source {spec!r}; use one of: {valid}")


__all__ = [
    "IDX_SOURCES",
    "SPLITS",
    "ImageDataset",
    "cache_directory",
    "find_idx_files",
    "float_to_images",
    "image_grid",
    "images_to_float",
    "load_dataset",
    "load_images_npz",
    "resize_tensor_images",
    "save_images_npz",
]
