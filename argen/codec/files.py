"""What `argen compress` and `argen decompress` do: image files → an ``.argz`` file → PNGs, and back."""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor

from argen.checkpoint import atomic_write
from argen.codec.codec import DEFAULT_BLOCK_SIZE, Codec
from argen.codec.container import Header, name_problem, unpack
from argen.codec.inputs import read_inputs
from argen.codec.reports import CompressionReport, DecompressionResult
from argen.errors import ArgenError


def compress(
    model: str | Path,
    inputs: list[str | Path] | Tensor,
    out: str | Path | None = None,
    *,
    lossless: bool = False,
    residual: str | Path | None = None,
    names: list[str] | None = None,
    class_prior: str = "uniform",
    block_size: int = DEFAULT_BLOCK_SIZE,
    resize: bool = False,
    device: str = "cpu",
    progress: bool = True,
    classes: Tensor | None = None,
) -> tuple[bytes, CompressionReport]:
    """Compress images with the model directory ``model``: what `argen compress` does (``classes``: see
    `Codec.compress`).

    ``inputs`` are image files, folders or npz files (see `read_inputs`), or a uint8 (N, C, H, W) tensor. ``out``
    (optional) is where the ``.argz`` file is written, atomically. Returns the file's bytes and a report::

        data, report = argen.compress("checkpoints/fashion-mnist/frequency", ["shirt.png"], "shirt.argz")
        result = argen.decompress("shirt.argz", steps=3)  # the coarse image of 3 frequency bands
    """
    codec = Codec(model, residual=residual, device=device)
    if isinstance(inputs, Tensor):
        images = inputs
    else:
        images, found, converted = read_inputs(list(inputs), shape=codec.shape, resize=resize)
        names = names if names is not None else found
        if converted and progress:
            print(f"converted or resized {converted} image(s) to {codec.shape[1]}×{codec.shape[2]} (--resize)")
    data, report = codec.compress(
        images, names=names, lossless=lossless, class_prior=class_prior, block_size=block_size, progress=progress,
        classes=classes,
    )  # fmt: skip
    if out is not None:
        atomic_write(out, lambda temporary: temporary.write_bytes(data))
    return data, report


def read_header(source: str | Path | bytes) -> Header:
    """The checked header of an ``.argz`` file (or its bytes)."""
    data, name = _read(source)
    return unpack(data, source=name)[0]


def _read(source: str | Path | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the data"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except OSError as error:
        raise ArgenError(f"cannot read {path}: {error.strerror}") from None


def decompress(
    source: str | Path | bytes,
    out: str | Path | None = None,
    *,
    model: str | Path | None = None,
    residual: str | Path | None = None,
    steps: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> DecompressionResult:
    """Decompress an ``.argz`` file (a path or its bytes): what `argen decompress` does.

    ``model`` defaults to the model directory recorded in the file; ``steps`` decodes only the first K steps of a
    next-scale / next-frequency stream. With ``out``, every image is written there as ``NAME.png``, one file each.
    """
    data, name = _read(source)
    header, _ = unpack(data, source=name)
    directory = Path(model) if model is not None else Path(header["model"]["directory"])
    if not (directory / "generator").is_dir():
        raise ArgenError(
            f"{name} was made with the model {directory}, which is not there: pass --model with that model directory"
        )
    if residual is None and header["mode"] == "lossless" and model is None:
        residual = header["model"].get("residual_directory")
    codec = Codec(directory, residual=residual, device=device)
    result = codec.decompress(data, steps=steps, progress=progress, source=name)
    if out is not None:
        write_pngs(result, out)
    return result


def safe_output_path(directory: Path, name: str, suffix: str = ".png") -> Path:
    """``directory/name.png``, refusing names that would escape ``directory`` or land on another name's file."""
    problem = name_problem(name)
    if problem:
        raise ArgenError(f"the file names an image {name!r} that {problem}: it is damaged")
    return directory / (name + suffix)


def write_pngs(result: DecompressionResult, directory: str | Path) -> list[Path]:
    """Write each decoded image to ``directory/NAME.png`` (atomically); returns the paths, one per image.

    Names are distinct (the reader checks), but a file system that ignores case makes ``A.png`` and ``a.png`` one
    file: that is refused rather than writing fewer files than there are images.
    """
    directory = Path(directory)
    paths: list[Path] = []
    written: dict[tuple[int, int], str] = {}  # (device, inode) → name, of the files this call wrote
    for name, image in zip(result.names, result.images, strict=True):
        path = safe_output_path(directory, name)
        try:
            if path.exists():
                status = path.stat()
                earlier = written.get((status.st_dev, status.st_ino))
                if earlier is not None:
                    raise ArgenError(
                        f"{path} is the file just written for {earlier!r} on this file system (it ignores case): "
                        "decompress to a folder on a case-sensitive file system"
                    )
            atomic_write(path, lambda temporary, image=image: image.save(temporary, format="PNG"))
            status = os.stat(path)
        except OSError as error:
            raise ArgenError(f"cannot write {path}: {error.strerror or error}") from None
        written[(status.st_dev, status.st_ino)] = name
        paths.append(path)
    return paths
