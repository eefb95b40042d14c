"""Image sources: IDX files (local, looked up, downloaded), folders of image files, and the conversions."""

import functools
import gzip
import hashlib
import http.server
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from argen import data
from argen.data import find_idx_files, float_to_images, image_grid, images_to_float, load_dataset
from argen.errors import ArgenError

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) as IDX: two zero bytes, type 0x08, ndim, big-endian uint32 sizes, then the bytes."""
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_idx_arrays(*, count: int, size: int = 6, label: int | None = None, seed: int = 0):
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, size=(count, size, size), dtype=np.uint8)
    labels = np.full(count, label, dtype=np.uint8) if label is not None else (np.arange(count) % 10).astype(np.uint8)
    return images, labels


def write_idx_split(directory: Path, split: str, images, labels, *, compress: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in zip(IDX_NAMES[split], (images, labels)):
        payload = idx_bytes(array)
        if compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (directory / name).write_bytes(payload)


def write_idx_dataset(directory: Path, *, label: int | None = None, compress: bool = True):
    """Both splits in ``directory``; returns {split: (images, labels)} as written."""
    arrays = {
        "train": make_idx_arrays(count=7, label=label, seed=1),
        "test": make_idx_arrays(count=3, label=label, seed=2),
    }
    for split, (images, labels) in arrays.items():
        write_idx_split(directory, split, images, labels, compress=compress)
    return arrays


@pytest.fixture(autouse=True)
def isolated_locations(tmp_path, monkeypatch):
    """No test sees the real cache, $ARGEN_DATA or Debian's files unless it asks for them."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ARGEN_DATA", raising=False)
    for name in data.IDX_SOURCES:
        monkeypatch.setitem(data.IDX_SOURCES[name], "debian_dir", str(tmp_path / "no-debian" / name))


# ---------------------------------------------------------------------------------------------------------------
# IDX files on disk


@pytest.mark.parametrize("layout", ["direct", "subfolder"])
def test_idx_gzipped_and_plain_load_exactly(tmp_path, layout):
    directory = tmp_path / "given" / ("mnist" if layout == "subfolder" else "")
    train_images, train_labels = make_idx_arrays(count=5, seed=3)
    test_images, test_labels = make_idx_arrays(count=4, seed=4)
    write_idx_split(directory, "train", train_images, train_labels, compress=True)
    write_idx_split(directory, "test", test_images, test_labels, compress=False)

    for split, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        dataset = load_dataset("mnist", split=split, data_dir=tmp_path / "given", progress=False)
        assert dataset.images.dtype == torch.uint8 and dataset.images.shape == (len(images), 1, 6, 6)
        assert torch.equal(dataset.images[:, 0], torch.from_numpy(images))
        assert dataset.labels.dtype == torch.int64 and dataset.labels.tolist() == labels.tolist()
        assert dataset.classes == [str(digit) for digit in range(10)]
        assert dataset.skipped == [] and dataset.spec == "mnist" and dataset.split == split
        assert len(dataset) == len(images) and dataset.image_shape == (1, 6, 6) and dataset.num_classes == 10
    assert find_idx_files("mnist", tmp_path / "given") == directory


def test_idx_resize_and_channels(tmp_path):
    write_idx_dataset(tmp_path)
    dataset = load_dataset("fashion-mnist", data_dir=tmp_path, image_size=10, channels=3)
    assert dataset.image_shape == (3, 10, 10) and len(dataset) == 7
    assert torch.equal(dataset.images, dataset.images[:, :1].expand(-1, 3, -1, -1))
    assert dataset.classes[0] == "T-shirt/top" and dataset.classes[9] == "Ankle boot"
    # A constant image stays that constant through the bicubic resize.
    directory = tmp_path / "constant"
    write_idx_dataset(directory)
    constant = np.full((7, 6, 6), 77, dtype=np.uint8)
    write_idx_split(directory, "train", constant, np.zeros(7, dtype=np.uint8), compress=True)
    resized = load_dataset("mnist", data_dir=directory, image_size=16)
    assert resized.image_shape == (1, 16, 16) and bool((resized.images == 77).all())


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda payload: b"\x00\x00\x09\x03" + payload[4:], "magic number"),
        (lambda payload: payload[: len(payload) // 2], "truncated"),
        (lambda payload: payload[:6], "truncated"),
        (lambda payload: b"", "magic number"),
    ],
)
@pytest.mark.parametrize("compress", [True, False])
def test_broken_idx_names_the_file(tmp_path, damage, message, compress):
    write_idx_dataset(tmp_path, compress=compress)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if compress else ""))
    payload = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
    path.write_bytes(gzip.compress(damage(payload)) if compress else damage(payload))
    with pytest.raises(ArgenError, match=message) as caught:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_truncated_gzip_and_mismatched_counts(tmp_path):
    write_idx_dataset(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ArgenError, match="cannot read .*train-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path)

    write_idx_dataset(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(6, dtype=np.uint8))))
    with pytest.raises(ArgenError, match="6 labels but .* 7 images"):
        load_dataset("mnist", data_dir=tmp_path)

    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(7, 10, dtype=np.uint8))))
    with pytest.raises(ArgenError, match="label 10 but mnist has 10 classes"):
        load_dataset("mnist", data_dir=tmp_path)


def test_lookup_order_data_dir_then_argen_data_then_home_cache(tmp_path, monkeypatch):
    home_cache = tmp_path / "home" / ".cache" / "argen" / "mnist"
    write_idx_dataset(home_cache, label=1)
    assert load_dataset("mnist").labels.unique().tolist() == [1]
    assert find_idx_files("mnist") == home_cache

    write_idx_dataset(tmp_path / "env" / "mnist", label=2)
    monkeypatch.setenv("ARGEN_DATA", str(tmp_path / "env"))
    assert load_dataset("mnist").labels.unique().tolist() == [2]
    assert find_idx_files("mnist") == tmp_path / "env" / "mnist"

    write_idx_dataset(tmp_path / "flag", label=3)
    assert load_dataset("mnist", data_dir=tmp_path / "flag").labels.unique().tolist() == [3]
    assert find_idx_files("mnist", tmp_path / "flag") == tmp_path / "flag"

    # A --data-dir without the files falls back, with a warning naming the directory actually used.
    with pytest.warns(UserWarning, match=f"using {tmp_path / 'env' / 'mnist'}"):
        assert load_dataset("mnist", data_dir=tmp_path / "empty").labels.unique().tolist() == [2]


def test_debian_directory_is_the_last_resort(tmp_path, monkeypatch):
    debian = tmp_path / "debian" / "fashion-mnist"
    write_idx_dataset(debian, label=4)
    monkeypatch.setitem(data.IDX_SOURCES["fashion-mnist"], "debian_dir", str(debian))
    assert find_idx_files("fashion-mnist") == debian
    assert load_dataset("fashion-mnist", split="test", download=False).labels.tolist() == [4, 4, 4]


# ---------------------------------------------------------------------------------------------------------------
# Downloading


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *arguments):  # noqa: A002 - the base class's parameter name
        pass


@pytest.fixture
def file_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving gzipped IDX files; yields (base URL, {file name: md5}, arrays)."""
    served = tmp_path / "served"
    arrays = write_idx_dataset(served, compress=True)
    checksums = {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in sorted(served.iterdir())}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", checksums, arrays
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_lands_in_the_cache_and_loads(tmp_path, monkeypatch, file_server):
    url, checksums, arrays = file_server
    monkeypatch.setitem(data.IDX_SOURCES["fashion-mnist"], "url", url)
    monkeypatch.setitem(data.IDX_SOURCES["fashion-mnist"], "md5", checksums)
    monkeypatch.setenv("ARGEN_DATA", str(tmp_path / "cache"))

    dataset = load_dataset("fashion-mnist", split="test", progress=False)
    cache = tmp_path / "cache" / "fashion-mnist"
    assert sorted(path.name for path in cache.iterdir()) == sorted(checksums)
    for name, md5 in checksums.items():
        assert hashlib.md5((cache / name).read_bytes()).hexdigest() == md5
    images, labels = arrays["test"]
    assert torch.equal(dataset.images[:, 0], torch.from_numpy(images)) and dataset.labels.tolist() == labels.tolist()
    # Now local: found without the network.
    assert find_idx_files("fashion-mnist") == cache
    assert len(load_dataset("fashion-mnist", download=False)) == 7


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, monkeypatch, file_server):
    url, checksums, _ = file_server
    monkeypatch.setitem(data.IDX_SOURCES["mnist"], "url", url)
    monkeypatch.setitem(data.IDX_SOURCES["mnist"], "md5", {name: "0" * 32 for name in checksums})
    monkeypatch.setenv("ARGEN_DATA", str(tmp_path / "cache"))
    with pytest.raises(ArgenError, match="md5 .* expected 0{32}, so it was not saved") as caught:
        load_dataset("mnist", progress=False)
    assert "\n" not in str(caught.value)
    cache = tmp_path / "cache" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


def assert_names_three_ways(message: str, name: str) -> None:
    assert "\n" not in message
    assert "--data-dir DIR" in message
    assert f"$ARGEN_DATA/{name}" in message and f"~/.cache/argen/{name}" in message
    assert "connect to the internet" in message


def test_offline_without_files_names_the_three_ways(monkeypatch):
    with pytest.raises(ArgenError, match="downloading is off") as caught:
        load_dataset("fashion-mnist", download=False)
    assert_names_three_ways(str(caught.value), "fashion-mnist")
    assert "apt-get install dataset-fashion-mnist" in str(caught.value)

    monkeypatch.setitem(data.IDX_SOURCES["mnist"], "url", "http://127.0.0.1:1/")
    with pytest.raises(ArgenError, match=r"downloading http://127\.0\.0\.1:1/train-images-idx3-ubyte\.gz failed"):
        load_dataset("mnist", progress=False)
    with pytest.raises(ArgenError) as caught:
        load_dataset("mnist", progress=False)
    assert_names_three_ways(str(caught.value), "mnist")
    assert find_idx_files("mnist") is None


def test_bad_spec_split_and_sizes():
    valid = "fashion-mnist, mnist, cifar10, folder:PATH"
    with pytest.raises(ArgenError, match=f"unknown data source 'cifar'; use one of: {valid}"):
        load_dataset("cifar")
    with pytest.raises(ArgenError, match="split must be 'train' or 'test'"):
        load_dataset("mnist", split="validation")
    with pytest.raises(ArgenError, match="channels must be 1"):
        load_dataset("mnist", channels=4)
    with pytest.raises(ArgenError, match="image size must be a positive"):
        load_dataset("mnist", image_size=0)


# ---------------------------------------------------------------------------------------------------------------
# Folders of image files


def save_solid(path: Path, colour, size, mode="RGB", **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, **options)


def identify(dataset, colours: dict[str, tuple[int, int, int]]) -> list[str]:
    """Name each loaded (solid-colour) image by the expected colour nearest its mean; asserts it is near."""
    names = []
    for image in dataset.images:
        mean = image.float().mean(dim=(1, 2))
        distances = {name: float((mean - torch.tensor(colour)).abs().max()) for name, colour in colours.items()}
        name, distance = min(distances.items(), key=lambda pair: pair[1])
        assert distance < 3, (mean, name)
        names.append(name)
    return names


def load_recording_warnings(spec: str, **options):
    """``load_dataset`` plus the messages of the warnings it gave (a hash split decides which split has which)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dataset = load_dataset(spec, progress=False, **options)
    return dataset, [str(warning.message) for warning in record]


def test_folder_labelled_skips_exactly_the_broken_files(tmp_path, capsys):
    root = tmp_path / "pictures"
    save_solid(root / "cat" / "red.png", (200, 30, 30), (40, 30))
    save_solid(root / "cat" / "grey.png", 90, (20, 36), mode="L")
    save_solid(root / "cat" / "nested" / "green.BMP", (20, 180, 40), (33, 33))
    save_solid(root / "dog" / "blue.jpg", (30, 30, 200), (50, 50), quality=95)
    save_solid(root / "dog" / "clear.png", (0, 0, 0, 0), (24, 24), mode="RGBA")  # transparent → white
    save_solid(root / "dog" / "yellow.webp", (220, 220, 20), (64, 48), lossless=True)
    colours = {
        "red": (200, 30, 30),
        "grey": (90, 90, 90),
        "green": (20, 180, 40),
        "blue": (30, 30, 200),
        "clear": (255, 255, 255),
        "yellow": (220, 220, 20),
    }
    expected_labels = {"red": 0, "grey": 0, "green": 0, "blue": 1, "clear": 1, "yellow": 1}
    (root / "cat" / "noise.png").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    noisy = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    noisy.save(tmp_path / "whole.jpg", quality=90)
    whole = (tmp_path / "whole.jpg").read_bytes()
    (root / "dog" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "dog" / "empty.jpeg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    broken = {str(root / "cat" / "noise.png"), str(root / "dog" / "cut.jpg"), str(root / "dog" / "empty.jpeg")}

    # Which split each file lands in is fixed by a hash of its name, so both splits are loaded and pooled.
    found, skipped, messages = {}, set(), []
    for split in ("train", "test"):
        dataset, split_messages = load_recording_warnings(f"folder:{root}", split=split, verbose=True)
        messages += split_messages
        assert dataset.classes == ["cat", "dog"] and dataset.num_classes == 2
        assert dataset.images.dtype == torch.uint8 and dataset.image_shape == (3, 32, 32)
        assert dataset.labels.dtype == torch.int64
        for name, label in zip(identify(dataset, colours), dataset.labels.tolist()):
            assert name not in found
            found[name] = label
        skipped.update(dataset.skipped)
    assert found == expected_labels
    assert skipped == broken
    assert sum(int(message.split("skipped ")[1].split()[0]) for message in messages) == 3
    listed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  skipped ")]
    assert sorted(line.split(": ")[0].removeprefix("  skipped ") for line in listed) == sorted(broken)

    with pytest.warns(UserWarning, match="skipped"):
        gray = load_dataset(f"folder:{root}", split="train", channels=1, image_size=8, progress=False)
    assert gray.image_shape == (1, 8, 8)


def test_folder_skip_warning_is_one_line_with_the_count(tmp_path, capsys):
    root = tmp_path / "split"
    for index in range(3):
        save_solid(root / "train" / f"good{index}.png", index * 50, (8, 8), mode="L")
    save_solid(root / "test" / "good.png", 7, (8, 8), mode="L")
    for index in range(2):
        (root / "train" / f"bad{index}.png").write_bytes(b"")
    with pytest.warns(UserWarning) as record:
        train = load_dataset(f"folder:{root}", progress=False)
    messages = [str(warning.message) for warning in record]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "skipped 2 unreadable image file(s)" in messages[0] and "pass --verbose to list them" in messages[0]
    assert capsys.readouterr().err == ""  # the files themselves are listed only with verbose=True
    assert len(train) == 3 and train.labels is None and train.image_shape == (3, 32, 32)
    assert train.skipped == [str(root / "train" / "bad0.png"), str(root / "train" / "bad1.png")]


def test_folder_unlabelled_and_seeded_split(tmp_path):
    root = tmp_path / "flat"
    for index in range(20):
        save_solid(root / f"image{index:02d}.png", (index * 10, 0, 0), (12, 16))
    train = load_dataset(f"folder:{root}", split="train", image_size=4, progress=False)
    test = load_dataset(f"folder:{root}", split="test", image_size=4, progress=False)
    assert train.labels is None and test.labels is None and train.classes == [] and train.num_classes == 0
    assert (len(train), len(test)) == (18, 2)
    reds = [int(image[0, 0, 0]) for dataset in (train, test) for image in dataset.images]
    assert sorted(reds) == [index * 10 for index in range(20)]
    # Deterministic: the same split again, and from a copy of the folder elsewhere.
    assert torch.equal(load_dataset(f"folder:{root}", split="test", image_size=4, progress=False).images, test.images)
    moved = tmp_path / "elsewhere" / "flat"
    moved.mkdir(parents=True)
    for path in root.iterdir():
        (moved / path.name).write_bytes(path.read_bytes())
    assert torch.equal(load_dataset(f"folder:{moved}", split="test", image_size=4, progress=False).images, test.images)


def test_folder_seeded_split_holds_out_every_class(tmp_path):
    root = tmp_path / "labelled"
    for name in ("a", "b", "c"):
        for index in range(10):
            save_solid(root / name / f"{index}.png", index, (4, 4), mode="L")
    test = load_dataset(f"folder:{root}", split="test", image_size=4, channels=1, progress=False)
    train = load_dataset(f"folder:{root}", split="train", image_size=4, channels=1, progress=False)
    assert sorted(test.labels.tolist()) == [0, 1, 2]
    assert sorted(train.labels.tolist()) == [0] * 9 + [1] * 9 + [2] * 9


def test_folder_train_test_subfolders_are_the_splits(tmp_path):
    root = tmp_path / "split"
    for index in range(3):
        save_solid(root / "train" / "apple" / f"{index}.png", (index, 0, 0), (8, 8))
        save_solid(root / "train" / "pear" / f"{index}.png", (index, 0, 0), (8, 8))
    save_solid(root / "test" / "pear" / "0.png", (0, 0, 0), (8, 8))
    train = load_dataset(f"folder:{root}", split="train", image_size=8, progress=False)
    test = load_dataset(f"folder:{root}", split="test", image_size=8, progress=False)
    assert train.classes == test.classes == ["apple", "pear"]
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    # "pear" keeps index 1 in test although test/ has no "apple" folder.
    assert test.labels.tolist() == [1]


def test_folder_root_images_beside_classes_are_ignored_with_a_warning(tmp_path):
    root = tmp_path / "mixed"
    save_solid(root / "loose.png", (1, 2, 3), (8, 8))
    for name in ("x", "y"):
        for index in range(4):
            save_solid(root / name / f"{index}.png", (5, 5, 5), (8, 8))
    with pytest.warns(UserWarning, match=r"ignored 1 image file\(s\) directly in"):
        train = load_dataset(f"folder:{root}", progress=False)
    with pytest.warns(UserWarning, match="ignored 1"):
        test = load_dataset(f"folder:{root}", split="test", progress=False)
    assert len(train) + len(test) == 8 and train.classes == ["x", "y"]


def test_folder_without_valid_images_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArgenError, match="no image files"):
        load_dataset(f"folder:{tmp_path / 'empty'}", progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    for index in range(3):
        (broken / f"{index}.jpg").write_bytes(b"\xff\xd8 not really")
    # Of three files, one is held out for test, so train tries (and fails on) two.
    with pytest.raises(ArgenError, match="none of the 2 train image files"), pytest.warns(UserWarning):
        load_dataset(f"folder:{broken}", progress=False)
    with pytest.raises(ArgenError, match="is not a directory"):
        load_dataset(f"folder:{tmp_path / 'missing'}", progress=False)


# ---------------------------------------------------------------------------------------------------------------
# Conversions


def test_float_round_trip_and_clamping():
    images = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    floats = images_to_float(images)
    assert floats.dtype == torch.float32 and float(floats.min()) == -1.0 and float(floats.max()) == 1.0
    assert torch.equal(float_to_images(floats), images)
    assert float_to_images(torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.5])).tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(TypeError):
        images_to_float(floats)


def test_image_grid_size_and_mode():
    gray = torch.full((5, 1, 4, 6), 200, dtype=torch.uint8)
    grid = image_grid(gray)
    # ⌈√5⌉ = 3 columns, 2 rows, 2-pixel padding around every tile.
    assert grid.mode == "L" and grid.size == (3 * (6 + 2) + 2, 2 * (4 + 2) + 2)
    pixels = np.asarray(grid)
    assert pixels[2, 2] == 200 and pixels[0, 0] == 0 and pixels[-3, -3] == 0  # the sixth tile is empty

    colour = torch.zeros(4, 3, 5, 5, dtype=torch.uint8)
    colour[:, 1] = 255
    grid = image_grid(colour, columns=4, padding=1)
    assert grid.mode == "RGB" and grid.size == (4 * (5 + 1) + 1, 1 * (5 + 1) + 1)
    assert grid.getpixel((1, 1)) == (0, 255, 0) and grid.getpixel((0, 0)) == (0, 0, 0)


# ---------------------------------------------------------------------------------------------------------------
# The real data, where Debian's package is installed

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_test_split(monkeypatch):
    monkeypatch.setitem(data.IDX_SOURCES["fashion-mnist"], "debian_dir", str(DEBIAN_FASHION_MNIST))
    dataset = load_dataset("fashion-mnist", split="test", download=False, progress=False)
    assert len(dataset) == 10000 and dataset.image_shape == (1, 28, 28) and dataset.num_classes == 10
    assert dataset.labels.bincount().tolist() == [1000] * 10
