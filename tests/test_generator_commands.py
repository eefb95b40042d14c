"""argen train → argen sample → Pipeline, for every order, as a user runs them (tiny models, seconds each)."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import write_idx_dataset
from PIL import Image

from argen import Pipeline
from argen.cli import run
from argen.errors import ArgenError
from argen.orders import ORDERS, default_tokenizers

TOKENIZER_FOR = default_tokenizers()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("generators")
    data = write_idx_dataset(root / "idx", train=64, test=16, size=16)
    for kind in sorted(set(TOKENIZER_FOR.values())):
        run([
            "train-tokenizer", "--data", "mnist", "--data-dir", str(data), "--tokenizer", kind,
            "--out", str(root / kind), "--steps", "10", "--batch-size", "16", "--width", "8", "--latent-dim", "8",
            "--codebook-size", "32", "--no-progress",
        ])  # fmt: skip
    return root, data


def train(workspace, order, out, *extra):
    root, data = workspace
    run([
        "train", "--tokenizer", str(root / TOKENIZER_FOR[order]), "--order", order, "--data", "mnist",
        "--data-dir", str(data), "--out", str(out), "--preset", "tiny", "--steps", "12", "--batch-size", "16",
        "--no-progress", "--warmup-steps", "2", *extra,
    ])  # fmt: skip


@pytest.mark.parametrize("order", list(ORDERS))
def test_train_sample_and_pipeline(order, workspace, tmp_path, capsys):
    out = tmp_path / order
    train(workspace, order, out)
    assert (out / "generator" / "model.safetensors").exists() and (out / "tokenizer" / "config.json").exists()

    grid, gif, npz = tmp_path / "grid.png", tmp_path / "progress.gif", tmp_path / "samples.npz"
    run(["sample", "--model", str(out), "--labels", "0,3", "--per-label", "3", "--cfg-scale", "2", "--top-k", "10",
         "--seed", "5", "--out", str(grid), "--progress", str(gif), "--save-npz", str(npz)])  # fmt: skip
    assert "6 images" in capsys.readouterr().out
    saved = np.load(npz)
    assert saved["images"].shape == (6, 16, 16) and saved["images"].dtype == np.uint8
    assert saved["labels"].tolist() == [0, 0, 0, 3, 3, 3]
    assert Image.open(grid).size == Image.open(gif).size
    # 16-pixel samples in cells enlarged ×4 to 64 px (nearest): a grid of 2 rows × 3 columns with 2-px padding
    assert Image.open(grid).size == (3 * 66 + 2, 2 * 66 + 2)

    pipeline = Pipeline.from_pretrained(out)
    assert gif_frames(gif) == pipeline.order.layout(pipeline.tokenizer.grid_shapes).num_steps
    first = pipeline(labels=[1, 2], cfg_scale=1.5, seed=3, return_intermediates=True)
    again = pipeline(labels=[1, 2], cfg_scale=1.5, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first.ids, again.ids))
    assert len(first.images) == 2 and first.images[0].size == (16, 16)
    assert len(first.intermediates) == first.forward_passes
    # The last intermediate is the final image.
    assert np.array_equal(np.asarray(first.intermediates[-1][0]), np.asarray(first.images[0]))
    # The npz holds what the pipeline makes for the same seed and batch.
    direct = pipeline(labels=[0, 0, 0, 3, 3, 3], cfg_scale=2, top_k=10, seed=5)
    assert np.array_equal(direct.pixels[:, 0].numpy(), saved["images"])


def gif_frames(path):
    image = Image.open(path)
    return getattr(image, "n_frames", 1)


def test_order_and_tokenizer_mismatch_is_refused(workspace, tmp_path):
    root, data = workspace
    with pytest.raises(ArgenError, match="needs a multiscale tokenizer"):
        run(["train", "--tokenizer", str(root / "vq"), "--order", "scale", "--data", "mnist", "--data-dir",
             str(data), "--out", str(tmp_path / "x"), "--steps", "1", "--no-progress"])  # fmt: skip


def test_pipeline_refuses_a_swapped_tokenizer(workspace, tmp_path):
    root, _ = workspace
    out = tmp_path / "raster"
    train(workspace, "raster", out)
    shutil.rmtree(out / "tokenizer")
    run(["train-tokenizer", "--data", "mnist", "--data-dir", str(workspace[1]), "--tokenizer", "vq", "--out",
         str(out / "tokenizer"), "--steps", "3", "--batch-size", "16", "--width", "8", "--latent-dim", "8",
         "--codebook-size", "32", "--no-progress", "--seed", "7"])  # fmt: skip
    with pytest.raises(ArgenError, match="not the tokenizer this generator was trained on"):
        Pipeline.from_pretrained(out)


def test_resume_continues_generator_training(workspace, tmp_path):
    out = tmp_path / "scale"
    train(workspace, "scale", out)
    # Same command with a longer budget continues from step 12 and reuses the token cache.
    before = (out / "tokens-train.safetensors").stat().st_mtime_ns
    train(workspace, "scale", out, "--steps", "16")
    from argen.checkpoint import load_train_state

    assert load_train_state(out / "train_state.pt")["step"] == 16
    assert (out / "tokens-train.safetensors").stat().st_mtime_ns == before


def test_width_depth_and_heads_override_the_preset(workspace, tmp_path):
    out = tmp_path / "custom"
    train(workspace, "scale", out, "--width", "16", "--depth", "1", "--heads", "2")
    config = json.loads((out / "generator" / "config.json").read_text())["config"]["transformer"]
    assert (config["width"], config["depth"], config["heads"]) == (16, 1, 2)
    with pytest.raises(ArgenError, match="multiple of the number of heads"):
        train(workspace, "scale", tmp_path / "bad", "--width", "15", "--heads", "2")


def old_names(state: dict) -> dict:
    """A state dict as versions before the Transformer.heads → output_heads rename wrote it."""
    return {name.replace("output_heads.", "heads.", 1): tensor for name, tensor in state.items()}


def test_models_and_runs_from_before_the_output_heads_rename_still_load_and_resume(workspace, tmp_path):
    from safetensors.torch import load_file, save_file

    from argen.checkpoint import load_train_state, save_train_state

    out = tmp_path / "neighbor"  # two output heads: output_heads.0 and output_heads.1
    train(workspace, "neighbor", out)
    expected = Pipeline.from_pretrained(out).model.state_dict()
    weights = out / "generator" / "model.safetensors"
    save_file(old_names(load_file(str(weights))), str(weights))
    state = load_train_state(out / "train_state.pt")
    save_train_state(out / "train_state.pt", dict(state, model=old_names(state["model"]), ema=old_names(state["ema"])))
    assert "heads.1.weight" in load_file(str(weights))
    loaded = Pipeline.from_pretrained(out).model.state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[name], expected[name]) for name in expected)
    train(workspace, "neighbor", out, "--steps", "14")  # resumes the old-format state
    assert load_train_state(out / "train_state.pt")["step"] == 14
    assert "output_heads.1.weight" in load_file(str(weights))
