"""Release format round trip and refusals, atomic writes, safe loading of training state."""

import json
import pickle
import random

import numpy as np
import pytest
import torch

from argen import checkpoint
from argen.checkpoint import (
    atomic_write,
    capture_rng_state,
    load_train_state,
    read_release_config,
    restore_rng_state,
    save_release,
    save_train_state,
)
from argen.errors import ArgenError
from argen.metrics.classifier import Classifier, ClassifierConfig, load_classifier


def make_release(directory, **config_values):
    config = ClassifierConfig(**config_values)
    torch.manual_seed(0)
    model = Classifier(config)
    save_release(directory, kind="classifier", config=config, state_dict=model.state_dict(), extra={"classes": ["a"]})
    return model.eval()


def test_release_round_trip(tmp_path):
    model = make_release(tmp_path / "c", width=8, num_classes=3)
    loaded, document = load_classifier(tmp_path / "c")
    assert document["kind"] == "classifier" and document["extra"]["classes"] == ["a"]
    assert loaded.config == model.config
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    images = torch.rand(2, 1, 28, 28) * 2 - 1
    assert torch.equal(model(images), loaded(images))


def test_half_precision_release_loads_into_float32(tmp_path):
    model = make_release(tmp_path / "fp32", width=8)
    save_release(
        tmp_path / "fp16", kind="classifier", config=model.config, state_dict=model.state_dict(), dtype=torch.float16
    )
    loaded, _ = load_classifier(tmp_path / "fp16")
    weight = loaded.head.weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, model.head.weight.half().float())
    assert (tmp_path / "fp16" / "model.safetensors").stat().st_size < (
        tmp_path / "fp32" / "model.safetensors"
    ).stat().st_size


def test_wrong_kind_is_refused_naming_both(tmp_path):
    config = ClassifierConfig(width=8)
    save_release(tmp_path, kind="tokenizer", config=config, state_dict=Classifier(config).state_dict())
    with pytest.raises(ArgenError, match="'tokenizer' checkpoint.*classifier checkpoint is needed"):
        load_classifier(tmp_path)


def test_wrong_shape_is_refused_before_loading(tmp_path):
    make_release(tmp_path, width=8)
    document = json.loads((tmp_path / "config.json").read_text())
    document["config"]["width"] = 16
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ArgenError, match=r"shape \(8, 1, 3, 3\) in the file but \(16, 1, 3, 3\)"):
        load_classifier(tmp_path)


def test_unknown_config_key_is_an_error(tmp_path):
    make_release(tmp_path, width=8)
    document = json.loads((tmp_path / "config.json").read_text())
    document["config"]["mystery_setting"] = 3
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ArgenError, match="unknown ClassifierConfig key.*mystery_setting"):
        load_classifier(tmp_path)


def test_other_format_version_and_missing_files(tmp_path):
    make_release(tmp_path / "a", width=8)
    document = json.loads((tmp_path / "a" / "config.json").read_text())
    document["format_version"] = 99
    (tmp_path / "a" / "config.json").write_text(json.dumps(document))
    with pytest.raises(ArgenError, match="format_version 99"):
        read_release_config(tmp_path / "a", kind="classifier")
    with pytest.raises(ArgenError, match="no config.json"):
        load_classifier(tmp_path / "nothing-here")
    make_release(tmp_path / "b", width=8)
    (tmp_path / "b" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArgenError, match="could not be read as safetensors"):
        load_classifier(tmp_path / "b")


def test_crash_mid_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model = make_release(tmp_path, width=8)
    save_train_state(tmp_path / "train_state.pt", {"step": 5, "model": model.state_dict()})

    def crash_after_partial_write(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as stream:
            stream.write(b"\x00" * 100)  # half a file, then the machine "dies"
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crash_after_partial_write)
    bigger = Classifier(ClassifierConfig(width=16))
    with pytest.raises(OSError):
        save_release(tmp_path, kind="classifier", config=bigger.config, state_dict=bigger.state_dict())

    def crash_in_torch_save(obj, path):
        open(path, "wb").write(b"partial")
        raise OSError("killed")

    monkeypatch.setattr(checkpoint.torch, "save", crash_in_torch_save)
    with pytest.raises(OSError):
        save_train_state(tmp_path / "train_state.pt", {"step": 10})
    monkeypatch.undo()

    loaded, _ = load_classifier(tmp_path)
    assert loaded.config.width == 8
    assert torch.equal(loaded.head.weight, model.head.weight)
    assert load_train_state(tmp_path / "train_state.pt")["step"] == 5
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model.safetensors", "train_state.pt"]


class NotPlain:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_training_state_never_unpickles_arbitrary_objects(tmp_path):
    path = tmp_path / "train_state.pt"
    torch.save({"step": 1, "payload": NotPlain()}, path)
    with pytest.raises(ArgenError, match="could not be loaded safely"):
        load_train_state(path)
    path.write_bytes(pickle.dumps({"step": 1}) + b"garbage")
    with pytest.raises(ArgenError):
        load_train_state(path)


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    save_train_state(tmp_path / "state.pt", {"rng": capture_rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(100)
    np.random.seed(100)
    random.seed(100)
    restore_rng_state(load_train_state(tmp_path / "state.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    import os

    atomic_write(tmp_path / "file.txt", lambda temporary: temporary.write_text("x"))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_cleans_up_on_failure(tmp_path):
    def fail(temporary):
        temporary.write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "file.txt", fail)
    assert list(tmp_path.iterdir()) == []
