"""`argen eval` says how far its numbers can be trusted: the real held-out floor beside every score, one warning
line for a weak classifier or small sets (argen.metrics.trust), none for the shipped Fashion-MNIST classifier."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_idx_dataset

from argen.cli import run
from argen.data import load_dataset
from argen.metrics.trust import scaled_accuracy, trust_warning

GOOD = {"classifier_accuracy": 0.91, "num_classes": 10, "feature_dim": 128, "generated": 10000, "reference": 60000}


def test_a_good_classifier_on_large_sets_gets_no_warning():
    assert trust_warning(**GOOD, fid=1.0, floor_fid=0.5) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"classifier_accuracy": 0.6}, "held-out accuracy 0.600 where chance is 0.100"),
        ({"classifier_accuracy": None}, "not recorded"),
        ({"num_classes": 2, "classifier_accuracy": 0.95}, "2-class classifier"),
        ({"generated": 500}, "500 images are few for 128-dimensional features"),
        ({"fid": 0.12, "floor_fid": 0.26}, "beats real held-out images"),
    ],
)
def test_each_doubt_is_named_in_one_line(change, reason):
    warning = trust_warning(**{**GOOD, **change})
    assert warning is not None and reason in warning and "\n" not in warning


def test_scaled_accuracy_puts_chance_at_zero():
    assert scaled_accuracy(0.5, 2) == 0 and scaled_accuracy(1.0, 7) == 1
    assert scaled_accuracy(0.9122, 10) == pytest.approx(0.9024, abs=1e-4)


def test_a_weak_classifier_warns_and_the_floor_is_printed(tmp_path, capsys):
    data = write_idx_dataset(tmp_path / "idx", train=200, test=100, size=12)
    common = ["--data", "mnist", "--data-dir", str(data), "--no-progress"]
    run(["train-classifier", *common, "--out", str(tmp_path / "weak"), "--steps", "2", "--batch-size", "32",
         "--width", "8", "--warmup-steps", "1", "--shift", "0"])  # fmt: skip
    noise = np.random.default_rng(0).integers(0, 256, size=(100, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", images=noise, labels=np.arange(100) % 10)
    capsys.readouterr()
    arguments = ["eval", *common, "--classifier", str(tmp_path / "weak"), "--samples", str(tmp_path / "noise.npz")]
    run([*arguments, "--json", str(tmp_path / "scores.json")])
    printed = capsys.readouterr().out.splitlines()
    warnings = [line for line in printed if line.startswith("warning:")]
    assert len(warnings) == 1 and "the classifier is weak" in warnings[0] and "images are few" in warnings[0]
    fid_line = next(line for line in printed if line.startswith("fid "))
    assert "(real held-out: " in fid_line
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["real_held_out"]["images"] == 100 and saved["warning"] == warnings[0]
    # The floor is the real test split scored as the samples are: the same as `argen eval --real test`.
    run(["eval", *common, "--classifier", str(tmp_path / "weak"), "--real", "test", "--json", str(tmp_path / "r.json")])
    real = json.loads((tmp_path / "r.json").read_text())
    assert real["fid"] == pytest.approx(saved["real_held_out"]["fid"], rel=1e-9)


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist package")
def test_the_shipped_fashion_mnist_classifier_does_not_warn(tmp_path, capsys):
    classifier = Path(__file__).parent.parent / "checkpoints" / "fashion-mnist" / "classifier"
    recorded = json.loads((classifier / "config.json").read_text())["extra"]["test_accuracy"]
    assert recorded > 0.9
    # Real training images as the "samples" (1 500: above 10 per feature dimension), the test split as reference.
    train = load_dataset("fashion-mnist", split="train", image_size=28, channels=1, progress=False)
    np.savez(tmp_path / "real.npz", images=train.images[:1500, 0].numpy(), labels=train.labels[:1500].numpy())
    run(["eval", "--data", "fashion-mnist", "--classifier", str(classifier), "--samples", str(tmp_path / "real.npz"),
         "--reference-split", "test", "--no-progress"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "warning" not in printed and "(real held-out: " in printed
