"""`argen bench` end to end on a tiny dataset: every order trained, measured and reported; a rerun redoes nothing.

The tiny settings (tiny preset, 8-channel tokenizers with 32 codes, 4 steps) make numbers that mean nothing; the
tests check the files, the schema `argen demo` reads, and that finished work is reused rather than redone.
"""

import contextlib
import io
import json
import re
import sys

import pytest
import torch
from conftest import write_idx_dataset
from PIL import Image

import argen.apps.sampling_files
import argen.metrics.evaluate
import argen.train
from argen.cli import run
from argen.errors import ArgenError, install_hint
from argen.orders import ORDERS, default_tokenizers

TINY = ["--preset", "tiny", "--tokenizer-width", "8", "--latent-dim", "8", "--codebook-size", "32",
        "--batch-size", "16", "--warmup-steps", "2", "--classifier-steps", "10", "--num", "20", "--per-label", "2",
        "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One bench run with a 4-step budget; no shipped classifier, so it trains its own in OUT/classifier."""
    root = tmp_path_factory.mktemp("bench")
    data = write_idx_dataset(root / "idx", train=160, test=40, size=12)
    arguments = ["bench", "--data", "mnist", "--data-dir", str(data), "--out", str(root / "out"), *TINY]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr("argen.apps.bench.shipped_checkpoint", lambda data, name="": None)
        run([*arguments, "--steps", "4"])
    return root / "out", arguments, printed.getvalue()


def load_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture
def calls(monkeypatch):
    """Count the expensive calls a run makes: evaluations, reference features, sample grids, trainings."""
    counts = dict.fromkeys(["evaluate_generator", "evaluate_tokenizer", "reference_features", "sample_to_files"], 0)

    def counted(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for name in ("evaluate_generator", "evaluate_tokenizer", "reference_features"):
        counted(argen.metrics.evaluate, name)
    counted(argen.apps.sampling_files, "sample_to_files")
    monkeypatch.setattr("argen.apps.bench.shipped_checkpoint", lambda data, name="": None)
    return counts


def test_bench_writes_results_tables_plot_and_grids_for_every_order(bench):
    out, _, printed = bench
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == "mnist" and results["preset"] == "tiny" and results["num_images"] == 20
    assert results["command"].startswith("argen bench --data mnist") and "--steps 4" in results["command"]
    assert results["cfg_scale"] == 2.0 and results["classifier"] == str(out / "classifier")
    assert 0.0 <= results["classifier_test_accuracy"] <= 1.0
    assert results["budget"]["steps"] == results["budget"]["tokenizer_steps"] == 4
    assert results["real"]["real"] == "test" and results["real"]["images"] == 20
    assert list(results["orders"]) == list(ORDERS)
    for order, row in results["orders"].items():
        assert row["order"] == order and row["tokenizer_kind"] == default_tokenizers()[order]
        assert row["images"] == 20 and row["sampling"]["cfg_scale"] == 2.0
        for name in ("fid", "kid", "kid_std", "inception_score", "precision", "recall", "class_accuracy",
                     "images_per_second", "forward_passes_per_image"):  # fmt: skip
            assert isinstance(row[name], float), (order, name)
        assert row["training"]["steps"] == 4 and row["training"]["final_loss"] > 0
        assert row["parameters"] > 0 and row["tokenizer"]["psnr"] > 0
        assert (out / "tokenizers" / default_tokenizers()[order] / "config.json").is_file()
        # one token cache per tokenizer, beside it: raster and neighbor share the vq ids
        assert (out / "tokenizers" / default_tokenizers()[order] / "tokens-train.safetensors").is_file()
        assert not (out / order / "tokens-train.safetensors").exists()
        grid, gif = Image.open(out / row["samples"]), Image.open(out / row["progress"])
        assert grid.size == gif.size and grid.height > grid.width  # 10 rows (classes) of 2 samples
        assert gif.n_frames == row["forward_passes_per_image"]  # one frame per step of the order's schedule
    # one pass per token for raster on the 3×3 latent of 12×12 images; the coarse-to-fine orders take fewer
    passes = {order: row["forward_passes_per_image"] for order, row in results["orders"].items()}
    assert passes["raster"] == 9 and passes["scale"] == passes["frequency"] < passes["neighbor"] < passes["raster"]

    markdown = (out / "results.md").read_text()
    assert results["command"] in markdown and "| real test images |" in markdown
    for order in ORDERS:
        assert f"| {order} | {default_tokenizers()[order]} |" in markdown and f"| {order} |" in printed
    assert "FID" in printed and "| real test images |" in printed
    plot = Image.open(out / "quality-speed.png")
    assert plot.format == "PNG" and plot.width > 300


def test_rerun_reuses_trainings_and_measurements(bench, calls):
    out, arguments, _ = bench
    before = json.loads((out / "results.json").read_text())
    elapsed = {order: load_state(out / order / "train_state.pt")["elapsed_seconds"] for order in ORDERS}
    tokenizer_weights = (out / "tokenizers" / "vq" / "model.safetensors").read_bytes()
    run([*arguments, "--steps", "4"])
    assert calls == dict.fromkeys(calls, 0)  # nothing evaluated or sampled again
    for order in ORDERS:  # a retrained run would have spent time again
        state = load_state(out / order / "train_state.pt")
        assert state["step"] == 4 and state["elapsed_seconds"] == elapsed[order]
    assert (out / "tokenizers" / "vq" / "model.safetensors").read_bytes() == tokenizer_weights
    assert json.loads((out / "results.json").read_text()) == before


def test_evaluate_only_measures_without_training_and_refuses_missing_models(bench, calls, monkeypatch, tmp_path):
    out, arguments, _ = bench

    def no_training(*args, **kwargs):
        raise AssertionError("--evaluate-only must not train")

    for name in ("train_generator", "train_tokenizer"):
        monkeypatch.setattr(argen.train, name, no_training)
    monkeypatch.setattr("argen.train.train_classifier", no_training)
    run([*arguments, "--evaluate-only", "--orders", "scale,raster"])
    results = json.loads((out / "results.json").read_text())
    assert results["budget"] == {"evaluate_only": True} and list(results["orders"]) == ["scale", "raster"]
    assert calls["evaluate_generator"] == 0  # cached measurements of the same weights and settings
    assert results["orders"]["scale"]["training"]["steps"] == 4

    empty = tmp_path / "empty"
    evaluate_only = [*arguments[:5], "--out", str(empty), *TINY, "--evaluate-only"]
    with pytest.raises(ArgenError, match=r"raster has no trained model"):
        run(evaluate_only)
    (empty / "raster" / "generator").mkdir(parents=True)
    with pytest.raises(ArgenError, match=r"evaluate-only: .*raster has no trained model"):
        run([*evaluate_only, "--orders", "raster"])
    assert sorted(path.name for path in empty.rglob("*")) == ["generator", "raster"]  # refused before any work


def test_bench_refuses_bad_requests_before_work(bench, monkeypatch, tmp_path):
    _, arguments, _ = bench
    fresh = [*arguments[:5], "--out", str(tmp_path / "out"), *TINY]
    with pytest.raises(ArgenError, match="no training budget"):
        run(fresh)
    with pytest.raises(ArgenError, match="unknown order diagonal"):
        run([*fresh, "--steps", "4", "--orders", "raster,diagonal"])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the eval extra were not installed
    with pytest.raises(ArgenError, match=re.escape(install_hint("eval"))):  # -e '.[eval]' from this clone
        run([*fresh, "--steps", "4"])
    assert not (tmp_path / "out").exists()


def test_a_larger_budget_resumes_and_remeasures_only_what_changed(bench, calls):
    out, arguments, _ = bench
    tokenizer_step = load_state(out / "tokenizers" / "multiscale" / "train_state.pt")["step"]
    run([*arguments, "--steps", "6", "--tokenizer-steps", "4", "--orders", "scale"])
    assert load_state(out / "scale" / "train_state.pt")["step"] == 6  # resumed from 4, not restarted
    assert load_state(out / "tokenizers" / "multiscale" / "train_state.pt")["step"] == tokenizer_step
    assert calls["evaluate_generator"] == 1 and calls["sample_to_files"] == 1  # scale's new weights; real cached
    assert calls["evaluate_tokenizer"] == 0
    results = json.loads((out / "results.json").read_text())
    assert results["orders"]["scale"]["training"]["steps"] == 6
