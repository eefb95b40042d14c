"""folder:ARCHIVE (.tar, .tar.gz, .tgz read without unpacking) and the decoded-image cache of folders and archives."""

import io
import os
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from argen.data import archive as archive_module
from argen.data import decoded_cache_directory, load_dataset
from argen.data import folder as folder_module
from argen.errors import ArgenError

COLOURS = {"apple": (200, 30, 30), "pear": (30, 200, 30), "plum": (90, 30, 160)}


def make_folder(root: Path, *, splits: bool = True, per_class: int = 4) -> Path:
    """An ImageFolder of small PNGs (a few dozen at most): each class a colour, each image a shade of it."""
    for name, colour in COLOURS.items():
        for index in range(per_class):
            shade = tuple(max(0, value - 9 * index) for value in colour)
            for split in ("train", "test") if splits else ("",):
                if split == "test" and index >= 2:
                    continue
                path = root / split / name / f"{index}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (12 + index, 10), shade).save(path)
    return root


def make_archive(folder: Path, path: Path, *, top: str | None = "photos") -> Path:
    """``folder`` as a tar archive at ``path`` (compressed as its suffix says), under ``top`` or at its root."""
    mode = "w" if path.suffix == ".tar" else "w:gz"
    with tarfile.open(path, mode) as archive:
        if top is None:
            for child in sorted(folder.iterdir()):
                archive.add(child, arcname=child.name)
        else:
            archive.add(folder, arcname=top)
    return path


def add_member(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    """Append ``member`` to an uncompressed archive."""
    member.size = len(data) if member.isreg() else 0
    with tarfile.open(path, "a") as archive:
        archive.addfile(member, io.BytesIO(data) if member.isreg() else None)


def load_quietly(spec: str, **options):
    """``load_dataset`` and the messages of the warnings it gave."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dataset = load_dataset(spec, progress=False, **options)
    return dataset, [str(warning.message) for warning in record]


def assert_same(first, second) -> None:
    assert torch.equal(first.images, second.images) and first.classes == second.classes
    assert (first.labels is None and second.labels is None) or torch.equal(first.labels, second.labels)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARGEN_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("ARGEN_NO_CACHE", raising=False)


@pytest.fixture
def count_decodes(monkeypatch):
    """How many images the folder and archive decoders have decoded since the test began."""
    calls = []
    for module in (folder_module, archive_module):
        original = module.decode_image

        def counted(*arguments, original=original, **options):
            calls.append(1)
            return original(*arguments, **options)

        monkeypatch.setattr(module, "decode_image", counted)
    return calls


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz"])
def test_archive_reads_like_the_folder_it_was_made_from(tmp_path, suffix):
    folder = make_folder(tmp_path / "photos")
    archive = make_archive(folder, tmp_path / f"photos{suffix}")
    for split in ("train", "test"):
        from_folder = load_dataset(f"folder:{folder}", split=split, progress=False, cache=False)
        from_archive = load_dataset(f"folder:{archive}", split=split, progress=False, cache=False)
        assert_same(from_archive, from_folder)
        assert from_archive.classes == ["apple", "pear", "plum"] and from_archive.skipped == []
    assert len(from_archive) == 6 and sorted(from_archive.labels.tolist()) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("top", ["photos", None])
def test_archive_seeded_split_matches_the_folder(tmp_path, top):
    folder = make_folder(tmp_path / "flat", splits=False, per_class=10)
    archive = make_archive(folder, tmp_path / "flat.tar.gz", top=top)
    for split in ("train", "test"):
        options = {"split": split, "image_size": 8, "progress": False, "cache": False}
        assert_same(load_dataset(f"folder:{archive}", **options), load_dataset(f"folder:{folder}", **options))
    assert len(load_dataset(f"folder:{archive}", split="test", progress=False, cache=False)) == 3


def test_unsafe_members_are_skipped_and_counted(tmp_path, capsys):
    folder = make_folder(tmp_path / "photos")
    archive = make_archive(folder, tmp_path / "photos.tar")
    clean = load_dataset(f"folder:{archive}", progress=False, cache=False)
    png = (folder / "train" / "apple" / "0.png").read_bytes()
    link = tarfile.TarInfo("photos/train/apple/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("photos/train/pear/hard.png")
    hard.type, hard.linkname = tarfile.LNKTYPE, "photos/train/apple/0.png"
    fifo = tarfile.TarInfo("photos/train/plum/fifo.png")
    fifo.type = tarfile.FIFOTYPE
    device = tarfile.TarInfo("photos/train/plum/device.png")
    device.type = tarfile.CHRTYPE
    for member in (link, hard, fifo, device):
        add_member(archive, member)
    add_member(archive, tarfile.TarInfo("photos/train/../../escape.png"), png)
    add_member(archive, tarfile.TarInfo("/photos/train/apple/absolute.png"), png)

    dataset, messages = load_quietly(f"folder:{archive}", cache=False, verbose=True)
    assert_same(dataset, clean)
    assert [message for message in messages if "archive member" in message] == [
        "folder:" + str(archive) + ": skipped 6 archive member(s) that are not regular files or whose paths leave the "
        "archive (links, devices, FIFOs, absolute or ../ paths)"
    ]
    assert len(dataset.skipped) == 6 and all(path.startswith(f"{archive}:") for path in dataset.skipped)
    assert f"  skipped {'photos/train/../../escape.png'}: path leaves the archive" in capsys.readouterr().err


def test_corrupt_members_are_skipped_like_broken_files(tmp_path):
    folder = make_folder(tmp_path / "photos")
    (folder / "train" / "pear" / "noise.png").write_bytes(np.random.default_rng(0).integers(0, 256, 900).tobytes())
    (folder / "train" / "plum" / "empty.jpg").write_bytes(b"")
    archive = make_archive(folder, tmp_path / "photos.tgz")
    dataset, messages = load_quietly(f"folder:{archive}", cache=False)
    assert len(dataset) == 12 and sorted(dataset.labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert dataset.skipped == [f"{archive}:photos/train/pear/noise.png", f"{archive}:photos/train/plum/empty.jpg"]
    assert any("skipped 2 unreadable image file(s)" in message for message in messages)


def test_damaged_or_missing_archive_is_an_error(tmp_path):
    archive = make_archive(make_folder(tmp_path / "photos"), tmp_path / "photos.tar.gz")
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(ArgenError, match="cannot read .*photos.tar.gz") as caught:
        load_dataset(f"folder:{archive}", progress=False)
    assert "\n" not in str(caught.value)
    with pytest.raises(ArgenError, match="is not a file"):
        load_dataset(f"folder:{tmp_path / 'missing.tgz'}", progress=False)
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    with pytest.raises(ArgenError, match="no image files"):
        load_dataset(f"folder:{empty}", progress=False)


# ---------------------------------------------------------------------------------------------------------------
# The decoded-image cache


def cache_entries() -> list[Path]:
    directory = decoded_cache_directory()
    return sorted(directory.iterdir()) if directory.exists() else []


def test_archive_decodes_once_then_reads_the_cache(tmp_path, count_decodes):
    archive = make_archive(make_folder(tmp_path / "photos"), tmp_path / "photos.tar.gz")
    first = load_dataset(f"folder:{archive}", progress=False)
    assert len(count_decodes) == 12
    (entry,) = cache_entries()
    assert entry.parent == tmp_path / "cache" / "decoded" and entry.suffix == ".npz"
    with np.load(entry, allow_pickle=False) as arrays:  # numbers and strings only, no pickles
        assert arrays["images"].shape == (12, 3, 32, 32)
    second = load_dataset(f"folder:{archive}", progress=False)
    assert len(count_decodes) == 12
    assert_same(second, first) and second.skipped == first.skipped
    # Another split, size or channel count is another entry; each decodes once.
    load_dataset(f"folder:{archive}", split="test", progress=False)
    load_dataset(f"folder:{archive}", image_size=8, channels=1, progress=False)
    load_dataset(f"folder:{archive}", image_size=8, channels=1, progress=False)
    assert len(count_decodes) == 12 + 6 + 12 and len(cache_entries()) == 3
    # New content under the same name (a rebuilt archive) is a new key.
    (tmp_path / "photos" / "test" / "pear" / "1.png").unlink()
    make_archive(tmp_path / "photos", archive)
    assert len(load_dataset(f"folder:{archive}", split="test", progress=False)) == 5
    assert len(count_decodes) == 12 + 6 + 12 + 5


def test_folder_cache_follows_file_changes(tmp_path, count_decodes):
    folder = make_folder(tmp_path / "photos")
    first = load_dataset(f"folder:{folder}", progress=False)
    assert_same(load_dataset(f"folder:{folder}", progress=False), first)
    assert len(count_decodes) == 12
    # Rewriting one file (same name, new time) makes a new key: the folder decodes again, with the new pixels.
    path = folder / "train" / "apple" / "0.png"
    Image.new("RGB", (12, 10), (1, 2, 3)).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = load_dataset(f"folder:{folder}", progress=False)
    assert len(count_decodes) == 24 and changed.images[0, :, 0, 0].tolist() == [1, 2, 3]


def test_cache_off_by_environment_or_argument(tmp_path, monkeypatch, count_decodes):
    folder = make_folder(tmp_path / "photos")
    load_dataset(f"folder:{folder}", progress=False, cache=False)
    monkeypatch.setenv("ARGEN_NO_CACHE", "1")
    load_dataset(f"folder:{folder}", progress=False)
    load_dataset(f"folder:{folder}", progress=False)
    assert len(count_decodes) == 36 and cache_entries() == []


def test_cache_keeps_the_warnings_and_replaces_a_damaged_entry(tmp_path, count_decodes):
    folder = make_folder(tmp_path / "photos")
    (folder / "train" / "pear" / "broken.png").write_bytes(b"not a png")
    first, messages = load_quietly(f"folder:{folder}")
    cached, cached_messages = load_quietly(f"folder:{folder}")
    assert len(count_decodes) == 13 and messages == cached_messages and len(messages) == 1  # 12 images, 1 broken
    assert "skipped 1 unreadable image file(s)" in messages[0]
    assert_same(cached, first) and cached.skipped == first.skipped == [str(folder / "train" / "pear" / "broken.png")]
    (entry,) = cache_entries()
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert_same(load_dataset(f"folder:{folder}", progress=False), first)
    assert len(count_decodes) == 26 and cache_entries() == [entry] and np.load(entry)["images"].shape[0] == 12
    # Written atomically: no temporary file is left beside the entries.
    assert [path.name for path in entry.parent.iterdir()] == [entry.name]
