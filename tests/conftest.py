"""Shared test fixtures: tiny IDX datasets written on the fly."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

# Tiny tensors run fastest on one thread, and a second thread spinning against whatever else shares the machine's
# two cores made small convolutions 10× slower here; tests pin one thread.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def private_feature_cache(tmp_path_factory, monkeypatch):
    """`argen eval` caches real-image features under $ARGEN_DATA/features: tests keep theirs out of the user's home."""
    monkeypatch.setenv("ARGEN_DATA", str(tmp_path_factory.mktemp("argen-data")))


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    """Write ``array`` (uint8) as an IDX file: magic 0x0000 08 ndim, big-endian dimension sizes, raw bytes."""
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def write_idx_dataset(directory: Path, *, train: int = 64, test: int = 32, size: int = 12, seed: int = 0) -> Path:
    """A learnable 10-class dataset in IDX form: class k is a bright bar at row k (plus noise)."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 10
        images = generator.integers(0, 60, size=(count, size, size))
        for index, label in enumerate(labels):
            images[index, label % size] = 255
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images.astype(np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
    return directory


@pytest.fixture
def idx_dataset(tmp_path) -> Path:
    return write_idx_dataset(tmp_path / "idx")
