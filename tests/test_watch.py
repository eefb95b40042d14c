"""Watching training (argen.train.watch): validation loss at checkpoints, preview grids, `argen plot`, TensorBoard;
and watching changes nothing about the training itself."""

import json

import pytest
import torch
from conftest import write_idx_dataset
from PIL import Image
from safetensors.torch import load_file

from argen.cli import run


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("watch")
    data = write_idx_dataset(root / "idx", train=64, test=16, size=16)
    common = ["--data", "mnist", "--data-dir", str(data), "--no-progress"]
    run(["train-tokenizer", *common, "--tokenizer", "vq", "--out", str(root / "tok"), "--steps", "4", "--batch-size",
         "16", "--width", "8", "--latent-dim", "8", "--codebook-size", "32", "--save-every", "2", "--preview-every",
         "2"])  # fmt: skip
    return root, common


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_tokenizer_run_logs_validation_loss_and_writes_reconstructions(workspace):
    root, _ = workspace
    validation = [record for record in records(root / "tok") if "validation_loss" in record]
    assert [record["step"] for record in validation] == [2, 4]
    assert all(torch.isfinite(torch.tensor(record["validation_loss"])) for record in validation)
    grid = Image.open(root / "tok" / "previews" / "step-4.png")
    assert grid.size[1] >= 2 * 64  # two rows (originals, reconstructions) of cells enlarged to ≥ 64 px


def generator(workspace, out, *extra):
    root, common = workspace
    run(["train", *common, "--tokenizer", str(root / "tok"), "--order", "raster", "--out", str(out), "--preset",
         "tiny", "--batch-size", "16", "--warmup-steps", "2", *extra])  # fmt: skip


def test_a_generator_run_writes_sample_grids_and_watching_changes_nothing(workspace, tmp_path):
    watched, plain = tmp_path / "watched", tmp_path / "plain"
    generator(workspace, watched, "--steps", "6", "--save-every", "3", "--preview-every", "3")
    generator(workspace, plain, "--steps", "6", "--save-every", "100", "--preview-every", "0")
    assert sorted(path.name for path in (watched / "previews").iterdir()) == ["step-3.png", "step-6.png"]
    assert not (plain / "previews").exists()
    assert Image.open(watched / "previews" / "step-6.png").size[0] >= 8 * 64  # a column per class, ≥ 64 px
    assert [r["step"] for r in records(watched) if "validation_loss" in r] == [3, 6]
    assert [r["step"] for r in records(plain) if "validation_loss" in r] == [6]  # the end is always scored
    # In the training record of its step: every record stays a full one (readers take the last record's loss).
    assert all("loss" in r and "learning_rate" in r for r in records(watched) + records(plain))
    # Validation and previews run on a copy under a forked random stream: the weights are bit-identical.
    first = load_file(str(watched / "generator" / "model.safetensors"))
    second = load_file(str(plain / "generator" / "model.safetensors"))
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_plot_draws_the_curves_of_several_runs(workspace, tmp_path, capsys):
    root, _ = workspace
    generator(workspace, tmp_path / "gen", "--steps", "4", "--log-every", "1", "--save-every", "2")
    out = tmp_path / "curves.png"
    run(["plot", str(root / "tok"), str(tmp_path / "gen"), "--out", str(out)])
    assert Image.open(out).size[0] > 600 and "curves:" in capsys.readouterr().out
    with pytest.raises(Exception, match="no metrics.jsonl"):
        run(["plot", str(tmp_path), "--out", str(out)])


def test_tensorboard_logs_or_says_in_one_line_that_it_is_missing(workspace, tmp_path, capsys):
    generator(workspace, tmp_path / "tb", "--steps", "2", "--log-every", "1", "--tensorboard")
    printed = capsys.readouterr()
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        lines = [line for line in (printed.out + printed.err).splitlines() if "tensorboard is not installed" in line]
        assert len(lines) == 1 and "[tensorboard]" in lines[0]
        assert (tmp_path / "tb" / "generator" / "model.safetensors").exists()  # training went on
    else:
        assert any((tmp_path / "tb" / "tensorboard").iterdir())


def test_license_and_citation_name_every_paper_the_code_implements():
    import re
    from pathlib import Path

    root = Path(__file__).parent.parent
    assert (
        root.joinpath("LICENSE").read_text().startswith("MIT License")
        and 'license = "MIT"' in (root / "pyproject.toml").read_text()
    )
    citation = (root / "CITATION.cff").read_text()
    implemented = set()
    for folder in ("orders", "samplers"):
        for module in (root / "argen" / folder).glob("*.py"):
            docstring = module.read_text().split('"""')[1] if module.read_text().startswith('"""') else ""
            implemented |= set(re.findall(r"arXiv:? ?(\d{4}\.\d{5})", docstring.split("\n\n")[0]))
    assert implemented >= {"2503.07076", "2404.02905", "2406.06525", "2503.10696", "2410.01699", "2411.17787"}
    for number in implemented:
        assert f"arXiv:{number}" in citation, number


def test_missing_extra_hints_fit_a_clone_and_an_installed_package(tmp_path, monkeypatch):
    import argen.errors
    from argen.errors import install_hint

    assert install_hint("compress").startswith("pip install -e '.[compress]' in ")  # this checkout is a clone
    installed = tmp_path / "site-packages" / "argen" / "errors.py"
    installed.parent.mkdir(parents=True)
    monkeypatch.setattr(argen.errors, "__file__", str(installed))
    assert install_hint("compress") == "pip install 'argen[compress]'"
