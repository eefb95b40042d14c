"""CIFAR-10's binary release: a tiny fake one read unpacked and as the archive, checked, and downloaded locally."""

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from argen.data import NAMED_SOURCES, find_cifar10, load_dataset
from argen.data import cifar10 as cifar10_module
from argen.errors import ArgenError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Records per file of the fake release: a few each, so the five train batches are told apart by their order.
COUNTS = {"data_batch_1.bin": 2, "data_batch_2.bin": 1, "data_batch_3.bin": 3, "data_batch_4.bin": 1}
COUNTS |= {"data_batch_5.bin": 2, "test_batch.bin": 3}


def make_records(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random images uint8 (N, 3, 32, 32) and labels (N,), for a release file of ``count`` records."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
    return images, generator.integers(0, 10, size=count, dtype=np.uint8)


def record_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The published record layout, written out by hand: label byte, then the red, green and blue planes, row-major."""
    out = bytearray()
    for image, label in zip(images, labels):
        out.append(int(label))
        for plane in range(3):
            for row in range(32):
                out += bytes(int(value) for value in image[plane, row])
    return bytes(out)


def release_files() -> tuple[dict[str, bytes], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The fake release's files {name: bytes} and the arrays of each split {split: (images, labels)}."""
    files, parts = {}, {"train": [], "test": []}
    for seed, (name, count) in enumerate(COUNTS.items()):
        images, labels = make_records(count, seed)
        files[name] = record_bytes(images, labels)
        parts["test" if name == "test_batch.bin" else "train"].append((images, labels))
    files["batches.meta.txt"] = ("\n".join(CLASSES) + "\n\n").encode()
    arrays = {split: tuple(np.concatenate(column) for column in zip(*pieces)) for split, pieces in parts.items()}
    return files, arrays


def write_release_directory(directory: Path) -> dict:
    files, arrays = release_files()
    (directory / "cifar-10-batches-bin").mkdir(parents=True)
    for name, data in files.items():
        (directory / "cifar-10-batches-bin" / name).write_bytes(data)
    return arrays


def write_release_archive(path: Path) -> dict:
    """The fake release as ``cifar-10-binary.tar.gz`` (members under cifar-10-batches-bin/, as published)."""
    files, arrays = release_files()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return arrays


@pytest.fixture(autouse=True)
def isolated_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ARGEN_DATA", str(tmp_path / "cache"))


def assert_split(dataset, images: np.ndarray, labels: np.ndarray) -> None:
    assert dataset.images.dtype == torch.uint8 and dataset.image_shape == (3, 32, 32)
    assert torch.equal(dataset.images, torch.from_numpy(images))
    assert dataset.labels.dtype == torch.int64 and dataset.labels.tolist() == labels.tolist()
    assert dataset.classes == CLASSES and dataset.skipped == []


def test_cifar10_is_a_named_source():
    assert "cifar10" in NAMED_SOURCES


def test_unpacked_release_reads_exactly_from_data_dir(tmp_path):
    arrays = write_release_directory(tmp_path / "given")
    for split in ("train", "test"):
        dataset = load_dataset("cifar10", split=split, data_dir=tmp_path / "given", download=False)
        assert_split(dataset, *arrays[split])
    assert len(arrays["train"][0]) == 9 and len(arrays["test"][0]) == 3
    # --data-dir may also name cifar-10-batches-bin itself.
    inner = tmp_path / "given" / "cifar-10-batches-bin"
    assert find_cifar10(inner) == inner
    assert_split(load_dataset("cifar10", split="test", data_dir=inner, download=False), *arrays["test"])


def test_archive_in_the_cache_reads_without_unpacking(tmp_path):
    archive = tmp_path / "cache" / "cifar10" / "cifar-10-binary.tar.gz"
    arrays = write_release_archive(archive)
    assert find_cifar10() == archive
    assert_split(load_dataset("cifar10", split="train", download=False), *arrays["train"])
    assert sorted(path.name for path in archive.parent.iterdir()) == ["cifar-10-binary.tar.gz"]
    small = load_dataset("cifar10", split="test", image_size=8, channels=1, download=False)
    assert small.image_shape == (1, 8, 8) and small.labels.tolist() == arrays["test"][1].tolist()


def test_damaged_release_files_name_the_file(tmp_path):
    write_release_directory(tmp_path)
    batch = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    batch.write_bytes(batch.read_bytes()[:-5])
    message = r"test_batch\.bin holds 9214 bytes, not a whole number of 3073-byte records"
    with pytest.raises(ArgenError, match=message) as caught:
        load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)
    assert "\n" not in str(caught.value)
    # A label past the classes batches.meta.txt names.
    batch.write_bytes(bytes([10]) + bytes(3072))
    with pytest.raises(ArgenError, match="has label 10 but batches.meta.txt names 10 classes"):
        load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)
    (tmp_path / "cifar-10-batches-bin" / "batches.meta.txt").write_text("\n \n")
    with pytest.raises(ArgenError, match="names no classes"):
        load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)


def test_damaged_archive_is_an_error(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    write_release_archive(archive)
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(ArgenError, match="cannot read .*cifar-10-binary.tar.gz"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    with tarfile.open(archive, "w:gz") as other:
        other.addfile(tarfile.TarInfo("something-else.txt"), io.BytesIO(b""))
    with pytest.raises(ArgenError, match="has no member .*it is not the CIFAR-10 binary release"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_the_pickled_python_release_is_not_read(tmp_path):
    # Only the binary release counts: a directory holding the python version's files is not a copy.
    python_version = tmp_path / "cifar-10-batches-py"
    python_version.mkdir()
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        (python_version / name).write_bytes(b"\x80\x04 not unpickled")
    assert find_cifar10(tmp_path) is None and find_cifar10(python_version) is None
    with pytest.raises(ArgenError, match="CIFAR-10 binary release not found .* and downloading is off") as caught:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert "\n" not in message and "--data-dir DIR" in message and "$ARGEN_DATA/cifar10" in message
    assert "connect to the internet" in message


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *arguments):  # noqa: A002 - the base class's parameter name
        pass


@pytest.fixture
def release_server(tmp_path):
    """A local HTTP server with the fake release; yields (URL of the archive, its md5, arrays, served path)."""
    served = tmp_path / "served" / "cifar-10-binary.tar.gz"
    arrays = write_release_archive(served)
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    handler = functools.partial(QuietHandler, directory=str(served.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{served.name}", md5, arrays, served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_lands_in_the_cache_once(tmp_path, monkeypatch, release_server):
    url, md5, arrays, _ = release_server
    monkeypatch.setitem(cifar10_module.CIFAR10_SOURCE, "url", url)
    monkeypatch.setitem(cifar10_module.CIFAR10_SOURCE, "md5", md5)
    assert_split(load_dataset("cifar10", split="test", progress=False), *arrays["test"])
    cached = tmp_path / "cache" / "cifar10" / "cifar-10-binary.tar.gz"
    assert sorted(cached.parent.iterdir()) == [cached]
    assert hashlib.md5(cached.read_bytes()).hexdigest() == md5
    # Now local: read without the network.
    monkeypatch.setitem(cifar10_module.CIFAR10_SOURCE, "url", "http://127.0.0.1:1/unreachable.tar.gz")
    assert_split(load_dataset("cifar10", split="train", download=False), *arrays["train"])


def test_corrupted_download_is_refused_and_leaves_nothing(tmp_path, monkeypatch, release_server):
    url, md5, _, served = release_server
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in transit
    served.write_bytes(bytes(data))
    monkeypatch.setitem(cifar10_module.CIFAR10_SOURCE, "url", url)
    monkeypatch.setitem(cifar10_module.CIFAR10_SOURCE, "md5", md5)
    with pytest.raises(ArgenError, match=f"md5 [0-9a-f]{{32}}, expected {md5}, so it was not saved") as caught:
        load_dataset("cifar10", progress=False)
    assert "\n" not in str(caught.value)
    cache = tmp_path / "cache" / "cifar10"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_unreachable_download_names_the_three_ways(monkeypatch):
    monkeypatch.setitem(cifar10_module.CIFAR10_SOURCE, "url", "http://127.0.0.1:1/cifar-10-binary.tar.gz")
    message = r"downloading http://127\.0\.0\.1:1/cifar-10-binary\.tar\.gz failed"
    with pytest.raises(ArgenError, match=message) as caught:
        load_dataset("cifar10", progress=False)
    assert "--data-dir DIR" in str(caught.value) and "~/.cache/argen/cifar10" in str(caught.value)
