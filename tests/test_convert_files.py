"""argen.convert.files: official checkpoint files load as state dicts, unwrapped, and a pickle that would execute
code is refused in one line without running."""

import argparse
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from argen.convert.files import load_state_dict
from argen.errors import ArgenError


class Payload:
    """Unpickling this would create ``marker``: what a hostile .pth does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def weights():
    return {"encoder.conv_in.weight": torch.randn(4, 3, 3, 3), "encoder.conv_in.bias": torch.zeros(4)}


@pytest.mark.parametrize(
    "wrap",
    [
        lambda state: state,  # VAR's layout
        lambda state: {"model": state, "steps": 10, "args": argparse.Namespace(image_size=256)},  # LlamaGen's
        lambda state: {"state_dict": state},
    ],
    ids=["plain", "model-with-args", "state_dict"],
)
def test_published_layouts_load(tmp_path, wrap):
    state = weights()
    path = tmp_path / "checkpoint.pt"
    torch.save(wrap(state), path)
    loaded = load_state_dict(path)
    assert set(loaded) == set(state) and all(torch.equal(loaded[name], state[name]) for name in state)


def test_safetensors_loads(tmp_path):
    state = weights()
    save_file(state, tmp_path / "weights.safetensors")
    assert torch.equal(
        load_state_dict(tmp_path / "weights.safetensors")["encoder.conv_in.weight"], state["encoder.conv_in.weight"]
    )


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
@pytest.mark.parametrize("where", ["top", "inside-model"])
def test_a_code_payload_is_refused_without_running(tmp_path, legacy, where):
    marker = tmp_path / "marker"
    payload = Payload(marker)
    content = payload if where == "top" else {"model": {**weights(), "x": payload}}
    path = tmp_path / "hostile.pth"
    if legacy:
        with open(path, "wb") as stream:
            pickle.dump(content, stream, protocol=2)
    else:
        torch.save(content, path)
    assert not marker.exists()
    with pytest.raises(ArgenError) as raised:
        load_state_dict(path)
    assert not marker.exists(), "the pickle's payload ran"
    message = str(raised.value)
    assert "\n" not in message and "refused" in message


def test_an_unexpected_class_is_refused(tmp_path):
    path = tmp_path / "object.pt"
    torch.save({"model": weights(), "config": torch.nn.Linear(2, 2)}, path)  # a module: a class beyond the safe set
    with pytest.raises(ArgenError, match="refused"):
        load_state_dict(path)


def test_no_state_dict_and_missing_file_are_refused(tmp_path):
    path = tmp_path / "numbers.pt"
    torch.save({"steps": 3}, path)
    with pytest.raises(ArgenError, match="holds no state dict"):
        load_state_dict(path)
    with pytest.raises(ArgenError, match="does not exist"):
        load_state_dict(tmp_path / "absent.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ArgenError, match="refused"):
        load_state_dict(tmp_path / "garbage.pth")
