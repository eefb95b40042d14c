"""`--config` recipes (configs/*.toml) and `argen export` (half-precision copies without training state)."""

import json
from pathlib import Path

import pytest
import torch
from conftest import write_idx_dataset

from argen import Pipeline
from argen.checkpoint import export_release
from argen.cli import parse_arguments, run
from argen.errors import ArgenError
from argen.metrics.classifier import load_classifier

REPOSITORY = Path(__file__).resolve().parent.parent


def test_every_shipped_recipe_parses_for_its_command():
    recipes = sorted((REPOSITORY / "configs").rglob("*.toml"))
    assert len(recipes) >= 8
    for recipe in recipes:
        command = next(line.split('"')[1] for line in recipe.read_text().splitlines() if line.startswith("command"))
        arguments = parse_arguments([command, "--config", str(recipe)])
        study = recipe.relative_to(REPOSITORY / "configs").parts[0]  # configs/STUDY/... writes runs/STUDY/...
        assert arguments.data == RECIPE_DATA[study] and arguments.out.startswith(f"runs/{study}/"), recipe


# The data each study's recipes read: the Debian package, and the CIFAR-10 copy beside the checkout (JPEG q75).
RECIPE_DATA = {"fashion-mnist": "fashion-mnist", "cifar10": "folder:../shared/data/cifar10-jpeg.tar.gz"}


def write_recipe(path, text):
    path.write_text(text)
    return str(path)


def test_config_values_become_defaults_and_flags_win(idx_dataset, tmp_path):
    recipe = write_recipe(
        tmp_path / "classifier.toml",
        f'command = "train-classifier"\ndata = "mnist"\ndata-dir = "{idx_dataset}"\nout = "{tmp_path / "run"}"\n'
        "width = 8\nsteps = 2\nbatch-size = 16\nshift = 0\nno-progress = true\n",
    )
    run(["train-classifier", "--config", recipe, "--steps", "3"])
    document = json.loads((tmp_path / "run" / "config.json").read_text())
    assert document["config"]["width"] == 8 and document["config"]["shift"] == 0
    assert document["extra"]["step"] == 3  # the command line's --steps beat the file's


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('command = "train"\n', "recipe for `argen train`"),
        ("widht = 8\n", "no flag --widht"),
        ('width = "wide"\n', "width = 'wide' is not a valid value"),
        ("flip = 1\n", "flip is a switch"),
        ('device = "tpu"\n', "device must be one of"),
        ("width = [8, 16]\n", "takes one value"),
        ("width = \n", "not valid TOML"),
    ],
)
def test_bad_recipes_are_refused_in_one_line(tmp_path, text, message):
    recipe = write_recipe(tmp_path / "bad.toml", text)
    with pytest.raises(ArgenError, match=message):
        run(["train-classifier", "--config", recipe, "--data", "mnist", "--out", str(tmp_path / "out")])


def test_missing_recipe_is_refused(tmp_path):
    with pytest.raises(ArgenError, match="cannot read --config"):
        run(["train-classifier", "--config", str(tmp_path / "nowhere.toml")])


def test_export_halves_a_model_and_keeps_it_loadable(tmp_path):
    data = write_idx_dataset(tmp_path / "idx", train=48, test=8, size=12)
    common = ["--data", "mnist", "--data-dir", str(data), "--no-progress"]
    run(["train-tokenizer", *common, "--tokenizer", "frequency", "--out", str(tmp_path / "tokenizer"), "--steps",
         "2", "--batch-size", "16", "--width", "8", "--latent-dim", "8", "--codebook-size", "32"])  # fmt: skip
    run(["train", *common, "--tokenizer", str(tmp_path / "tokenizer"), "--order", "frequency", "--out",
         str(tmp_path / "model"), "--preset", "tiny", "--steps", "2", "--batch-size", "16"])  # fmt: skip
    run(["export", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "shipped")])
    shipped = tmp_path / "shipped"
    assert sorted(path.name for path in shipped.iterdir()) == ["generator", "tokenizer"]  # no cache, no state
    original, exported = Pipeline.from_pretrained(tmp_path / "model"), Pipeline.from_pretrained(shipped)
    for name, tensor in exported.model.state_dict().items():
        assert tensor.dtype == original.model.state_dict()[name].dtype  # loading casts back
        assert torch.allclose(tensor, original.model.state_dict()[name], rtol=1e-3, atol=1e-3), name
    document = json.loads((shipped / "generator" / "config.json").read_text())
    assert document["extra"]["stored_dtype"] == "float16" and document["extra"]["step"] == 2  # provenance kept
    size = sum(path.stat().st_size for path in (shipped / "generator").iterdir())
    original_size = sum(path.stat().st_size for path in (tmp_path / "model" / "generator").iterdir())
    assert size < 0.6 * original_size


def test_export_of_a_single_release_and_refusals(tmp_path, idx_dataset):
    run(["train-classifier", "--data", "mnist", "--data-dir", str(idx_dataset), "--out", str(tmp_path / "run"),
         "--steps", "1", "--batch-size", "16", "--width", "8", "--no-progress"])  # fmt: skip
    run(["export", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "classifier"), "--dtype", "bfloat16"])
    assert not (tmp_path / "classifier" / "train_state.pt").exists()
    model, document = load_classifier(tmp_path / "classifier")
    assert document["extra"]["stored_dtype"] == "bfloat16" and next(model.parameters()).dtype == torch.float32
    with pytest.raises(ArgenError, match="neither a model directory"):
        run(["export", "--model", str(tmp_path), "--out", str(tmp_path / "x")])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{")
    with pytest.raises(ArgenError, match="not valid JSON"):
        export_release(tmp_path / "broken", tmp_path / "y")
