"""Image sources as uint8 tensors in memory: Fashion-MNIST, MNIST and folders of image files.

Every source becomes one `ImageDataset` holding ``images`` uint8 (N, C, H, W) with C 1 or 3, and ``labels`` int64
(N,) or None. The ``spec`` string names the source:

- ``fashion-mnist`` and ``mnist``: the IDX files, found locally (`find_idx_files` gives the search order) or
  downloaded once into the cache with their official md5 checked before they are moved into place.
- ``folder:PATH``: every PNG/JPEG/WebP/BMP under PATH, one first-level subfolder per class (the ImageFolder
  convention), with ``train/`` and ``test/`` subfolders as the splits when both exist and otherwise a seeded 10 %
  test split that is the same on every machine.

No file is trusted: IDX headers are checked against the data they describe, and every image file is decoded in full
while the dataset is built. A broken IDX file raises an `ArgenError` naming it; a broken image file is skipped and
counted, so one bad file never costs a whole folder.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import math
import os
import struct
import sys
import urllib.error
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.nn import functional
from tqdm import tqdm

from argen.checkpoint import atomic_write
from argen.errors import ArgenError

SPLITS = ("train", "test")

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

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
FOLDER_CHANNELS = 3
FOLDER_IMAGE_SIZE = 32
FOLDER_TEST_FRACTION = 0.1
# Part of the hash that ranks files for the seeded split; changing it reshuffles every user's split.
FOLDER_SPLIT_SEED = "argen-folder-split-1"
# Modes whose alpha must be composited before conversion: PIL's convert("RGB") just drops alpha, which turns
# transparent pixels into whatever colour they happen to store (often black).
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


@dataclass
class ImageDataset:
    """Images of one split of one source, decoded and in memory.

    ``images`` uint8 (N, C, H, W) with C in {1, 3}; ``labels`` int64 (N,) indexing ``classes``, or None with
    ``classes == []`` for an unlabelled folder; ``skipped`` the image files that failed to decode.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    skipped: list[str]
    spec: str
    split: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        channels, height, width = self.images.shape[1:]
        return channels, height, width

    @property
    def num_classes(self) -> int:
        return len(self.classes)


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


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] → float32 in [-1, 1], 0 ↦ -1 and 255 ↦ 1."""
    if images.dtype != torch.uint8:
        raise TypeError(f"images_to_float expects uint8 images, got {images.dtype}")
    return images.to(torch.float32).div(127.5).sub(1.0)


def float_to_images(images: torch.Tensor) -> torch.Tensor:
    """Float (B, C, H, W) in [-1, 1] → uint8, clamped first so overshooting model outputs saturate, then rounded."""
    return images.detach().to(torch.float32).clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)


def image_grid(images: torch.Tensor, *, columns: int | None = None, padding: int = 2) -> Image.Image:
    """uint8 (N, C, H, W) → one PIL image (mode "L" for C=1, "RGB" for C=3) of the images in rows.

    ``columns`` defaults to ⌈√N⌉ so the grid is near-square; ``padding`` black pixels separate and frame the tiles.
    """
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.dtype != torch.uint8 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        shape = tuple(images.shape)
        raise ValueError(f"image_grid expects uint8 (N, C, H, W) with N ≥ 1 and C 1 or 3, got {images.dtype} {shape}")
    count, channels, height, width = images.shape
    columns = math.ceil(math.sqrt(count)) if columns is None else max(1, min(columns, count))
    rows = math.ceil(count / columns)
    canvas = np.zeros(
        (channels, rows * (height + padding) + padding, columns * (width + padding) + padding), dtype=np.uint8
    )
    pixels = images.detach().cpu().numpy()
    for index in range(count):
        row, column = divmod(index, columns)
        top = padding + row * (height + padding)
        left = padding + column * (width + padding)
        canvas[:, top : top + height, left : left + width] = pixels[index]
    if channels == 1:
        return Image.fromarray(canvas[0])
    return Image.fromarray(np.ascontiguousarray(canvas.transpose(1, 2, 0)))


def save_images_npz(path: str | Path, images: torch.Tensor, labels: torch.Tensor | None) -> None:
    """uint8 images as (N, H, W) for grayscale or (N, H, W, 3), plus labels (empty when unconditional)."""
    array = images.permute(0, 2, 3, 1).numpy()
    array = array[..., 0] if array.shape[-1] == 1 else array
    np.savez_compressed(path, images=array, labels=(labels if labels is not None else torch.empty(0)).numpy())


def load_images_npz(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read an npz of uint8 images ((N, H, W) or (N, H, W, C) with C 1 or 3) and optional labels; no pickles."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive:
                raise ArgenError(f"{path} has no 'images' array (found: {', '.join(archive.files) or 'nothing'})")
            array = archive["images"]
            labels = archive["labels"] if "labels" in archive else None
    except (OSError, ValueError) as error:
        raise ArgenError(f"cannot read {path} as an npz of images: {error}") from None
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3)):
        raise ArgenError(
            f"{path}: 'images' must be uint8 (N, H, W) or (N, H, W, 1|3), got {array.dtype} {tuple(array.shape)}"
        )
    images = torch.from_numpy(array)
    images = images[:, None] if images.dim() == 3 else images.permute(0, 3, 1, 2)
    if labels is not None and labels.size == 0:
        labels = None
    if labels is not None:
        if labels.shape != (images.shape[0],):
            raise ArgenError(f"{path}: 'labels' must have one entry per image, got shape {tuple(labels.shape)}")
        labels = torch.from_numpy(labels.astype(np.int64))
    return images.contiguous(), labels


# ---------------------------------------------------------------------------------------------------------------
# IDX sources: fashion-mnist, mnist


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
        warnings.warn(f"no {name} IDX files in {data_dir} or {Path(data_dir) / name}; using {directory}", stacklevel=3)
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


def resize_tensor_images(images: torch.Tensor, *, image_size: int | None, channels: int | None) -> torch.Tensor:
    """uint8 (N, C, H, W) → uint8 (N, channels, image_size, image_size): centre square, bicubic resize, channels.

    Done on tensors rather than through PIL because IDX images arrive as one array: tens of thousands of them
    resize in one batched call instead of one PIL round trip each.
    """
    count, native_channels, height, width = images.shape
    if channels is not None and channels != native_channels:
        if native_channels == 1:
            images = images.expand(-1, channels, -1, -1)
        else:
            # ITU-R 601-2 luma, the weights PIL's convert("L") uses, so both sources agree.
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.to(torch.float32) * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if image_size is not None and (height, width) != (image_size, image_size):
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = images[:, :, top : top + side, left : left + side]
        resized = []
        # Chunks bound the float32 copy to a few tens of MB whatever the dataset size.
        for start in range(0, count, 4096):
            chunk = square[start : start + 4096].to(torch.float32)
            chunk = functional.interpolate(
                chunk, size=(image_size, image_size), mode="bicubic", antialias=True, align_corners=False
            )
            resized.append(chunk.round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(resized)
    return images.contiguous()


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
                "the IDX files yourself and pass --data-dir DIR"
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


def one_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---------------------------------------------------------------------------------------------------------------
# Folder source: folder:PATH


def load_folder(
    spec: str, *, split: str, image_size: int, channels: int, verbose: bool, progress: bool
) -> ImageDataset:
    folder = Path(spec.removeprefix("folder:")).expanduser()
    if not folder.is_dir():
        raise ArgenError(f"{spec}: {folder} is not a directory; pass folder:PATH with PATH a directory of images")
    explicit_splits = (folder / "train").is_dir() and (folder / "test").is_dir()
    roots = [folder / name for name in SPLITS] if explicit_splits else [folder]
    root = folder / split if explicit_splits else folder
    listings = {each_root: list_image_files(each_root) for each_root in roots}
    files = listings[root]
    # Classes come from every split root, so a class missing from test/ still gets the same index as in train/.
    classes = sorted({path.parts[0] for listing in listings.values() for path in listing if len(path.parts) > 1})
    labels: list[int] | None = None
    if classes:
        in_root = [path for path in files if len(path.parts) == 1]
        if in_root:
            warnings.warn(
                f"{spec}: ignored {len(in_root)} image file(s) directly in {root}; in a folder with class "
                "subfolders every image must be inside one",
                stacklevel=3,
            )
        files = [path for path in files if len(path.parts) > 1]
        class_index = {name: index for index, name in enumerate(classes)}
        labels = [class_index[path.parts[0]] for path in files]
    if not files:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise ArgenError(f"{spec}: no image files ({extensions}) under {root}; point folder: at a directory of images")
    if not explicit_splits:
        files, labels = seeded_split(files, labels, split=split)
        if not files:
            raise ArgenError(
                f"{spec}: too few images under {root} to hold out a test split; add images, or make train/ and test/ "
                "subfolders"
            )
    images, kept, skipped = decode_images(root, files, image_size=image_size, channels=channels, progress=progress)
    if skipped:
        hint = "" if verbose else "; pass --verbose to list them"
        warnings.warn(
            f"{spec} [{split}]: skipped {len(skipped)} unreadable image file(s) (corrupt, truncated or empty){hint}",
            stacklevel=3,
        )
        if verbose:
            for path, reason in skipped:
                print(f"  skipped {path}: {reason}", file=sys.stderr)
    if not kept:
        raise ArgenError(
            f"{spec}: none of the {len(files)} {split} image files under {root} could be decoded; replace them or "
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
        # Broad on purpose: corrupt data makes PIL's decoders raise OSError, ValueError, SyntaxError, struct.error,
        # IndexError and more, and any of them means this one file is unusable, not that the run should stop.
        except Exception as error:
            skipped.append((str(path), one_line(error)))
            continue
        images[len(kept)] = pixels if channels == 3 else pixels[None]
        kept.append(index)
    # Copy only when something was skipped, so a full load keeps one buffer rather than two.
    return (images if len(kept) == len(files) else images[: len(kept)].copy()), kept, skipped


def decode_image(path: Path, *, image_size: int, channels: int) -> np.ndarray:
    """One image file → uint8 (S, S) for 1 channel or (C, S, S) for 3: fully decoded, converted, resized, cropped."""
    mode = "RGB" if channels == 3 else "L"
    with Image.open(path) as image:
        # JPEG only: decode at the smallest DCT scale that stays ≥ image_size on both sides, much faster for photos.
        image.draft(mode, (image_size, image_size))
        # load() decodes every byte now, so a truncated file fails here instead of turning into a grey half image.
        image.load()
        image = ImageOps.exif_transpose(image)
        image = convert_mode(image, mode)
        width, height = image.size
        side = min(width, height)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        if (width, height) != (image_size, image_size):
            # Resizing only the centred square is the same as resizing the shorter side then centre-cropping,
            # without resampling pixels that would be cropped away. reducing_gap trades an invisible amount of
            # quality for speed on large photos (see PIL's Image.resize).
            image = image.resize((image_size, image_size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
        pixels = np.asarray(image)
    return pixels.transpose(2, 0, 1) if channels == 3 else pixels


def convert_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` in ``mode`` ("L" or "RGB"), with transparency composited onto white and 16-bit depth scaled."""
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # 16-bit grayscale PNGs: PIL's convert("L") clips values above 255 instead of scaling them.
        scaled = (np.asarray(image, dtype=np.float32) / 257).round().clip(0, 255).astype(np.uint8)
        image = Image.fromarray(scaled)
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        # White, as image viewers and browsers show transparency; dropping alpha would expose arbitrary colours.
        foreground = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", foreground.size, (255, 255, 255, 255)), foreground)
    return image if image.mode == mode else image.convert(mode)


# ---------------------------------------------------------------------------------------------------------------
# Token caches: a dataset's ids, encoded once, so generator training never runs the tokenizer's encoder again.

TOKEN_CACHE_FORMAT = "argen-token-cache-1"


def release_fingerprint(directory: str | Path) -> str:
    """A short hash of a release's config.json and weights: two caches agree iff their tokenizers are identical."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with open(Path(directory) / name, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@torch.no_grad()
def encode_dataset(
    tokenizer, dataset: ImageDataset, *, batch_size: int = 256, progress: bool = True
) -> list[torch.Tensor]:
    """Encode every image of ``dataset``: one (N, h_i, w_i) LongTensor per grid of ``tokenizer``."""
    tokenizer.eval()
    grids: list[list[torch.Tensor]] = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="encode", unit="batch", disable=not progress):
        ids = tokenizer.encode(images_to_float(dataset.images[start : start + batch_size]))
        grids.append(ids)
    return [torch.cat([batch[index] for batch in grids]) for index in range(len(grids[0]))]


def save_token_cache(
    path: str | Path,
    *,
    ids: list[torch.Tensor],
    labels: torch.Tensor | None,
    classes: list[str],
    codebook_size: int,
    fingerprint: str,
    spec: str,
    split: str,
) -> None:
    """Store ids as the smallest integer type that holds the codebook, with the tokenizer's fingerprint and the
    class names (safetensors metadata is str → str, so they are stored as JSON)."""
    from safetensors.torch import save_file

    storage = torch.int16 if codebook_size <= 2**15 else torch.int32
    tensors = {f"grid_{index}": grid.to(storage).contiguous() for index, grid in enumerate(ids)}
    if labels is not None:
        tensors["labels"] = labels.to(torch.int64).contiguous()
    metadata = {
        "format": TOKEN_CACHE_FORMAT,
        "tokenizer_fingerprint": fingerprint,
        "data": spec,
        "split": split,
        "codebook_size": str(codebook_size),
        "classes": json.dumps(classes),
    }
    atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))


def load_token_cache(path: str | Path, *, fingerprint: str) -> tuple[list[torch.Tensor], torch.Tensor | None, dict]:
    """Read a token cache made by the tokenizer with ``fingerprint``; a cache from any other tokenizer is refused."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:
        raise ArgenError(f"{path} is not a readable token cache ({one_line(error)}); delete it to re-encode") from None
    if metadata.get("format") != TOKEN_CACHE_FORMAT:
        raise ArgenError(f"{path} is not an argen token cache; delete it or pass another path")
    if metadata.get("tokenizer_fingerprint") != fingerprint:
        raise ArgenError(
            f"{path} was encoded by another tokenizer (fingerprint {metadata.get('tokenizer_fingerprint')}, this one "
            f"is {fingerprint}); re-encode with `argen encode` or delete the cache"
        )
    metadata["classes"] = json.loads(metadata.get("classes", "[]"))
    grid_count = sum(name.startswith("grid_") for name in tensors)
    ids = [tensors[f"grid_{index}"].long() for index in range(grid_count)]
    return ids, tensors.get("labels"), metadata
