"""`argen tune` (argen.metrics.tuning): the class-accuracy rule and the two-stage search on fake scores, then the
command on a tiny model writing sampling.json that the Pipeline uses."""

import json

from conftest import write_idx_dataset

from argen import Pipeline
from argen.cli import run
from argen.metrics.tuning import choose, sweep


def fake_evaluate(table):
    calls = []

    def evaluate(settings):
        calls.append(settings)
        key = tuple(sorted(settings.items()))
        return table.get(key, {"fid": 5.0, "class_accuracy": 0.95})

    return evaluate, calls


def test_the_lowest_fid_among_settings_with_enough_class_accuracy_wins():
    scores = [{"cfg_scale": 1.0, "fid": 0.5, "class_accuracy": 0.6}, {"cfg_scale": 2.0, "fid": 0.8,
              "class_accuracy": 0.92}, {"cfg_scale": 3.0, "fid": 0.9, "class_accuracy": 0.97}]  # fmt: skip
    assert choose(scores, min_class_accuracy=0.9)["cfg_scale"] == 2.0
    assert choose(scores, min_class_accuracy=0.99)["cfg_scale"] == 1.0  # none eligible: the lowest FID of all
    assert choose(scores, min_class_accuracy=None)["cfg_scale"] == 1.0


def test_the_search_refines_around_the_best_guidance():
    table = {
        (("cfg_scale", 1.5),): {"fid": 1.0, "class_accuracy": 0.95},
        (("cfg_scale", 1.5), ("top_p", 0.9)): {"fid": 0.7, "class_accuracy": 0.93},
    }
    evaluate, calls = fake_evaluate(table)
    scores, best = sweep(evaluate, grid=None, conditional=True, min_class_accuracy=0.9)
    assert [call["cfg_scale"] for call in calls[:4]] == [1.0, 1.5, 2.0, 3.0]
    assert all(call["cfg_scale"] == 1.5 for call in calls[4:]) and len(calls) == 8
    assert best == {"cfg_scale": 1.5, "top_p": 0.9, "fid": 0.7, "class_accuracy": 0.93}
    evaluate, calls = fake_evaluate({})
    sweep(evaluate, grid=None, conditional=False, min_class_accuracy=None)
    assert {call["cfg_scale"] for call in calls} == {1.0} and all("cfg_schedule" not in call for call in calls)
    grid = [{"cfg_scale": 2.0, "top_k": 0}, {"cfg_scale": 2.0, "top_k": 100}]
    evaluate, calls = fake_evaluate({})
    sweep(evaluate, grid=grid, conditional=True, min_class_accuracy=0.9)
    assert calls == grid  # bench/convergence.py's own grid, as given


def test_tune_writes_sampling_json_that_the_pipeline_uses(tmp_path, capsys):
    data = write_idx_dataset(tmp_path / "idx", train=200, test=100, size=12)
    common = ["--data", "mnist", "--data-dir", str(data), "--no-progress"]
    run(["train-classifier", *common, "--out", str(tmp_path / "classifier"), "--steps", "20", "--batch-size", "32",
         "--width", "8", "--warmup-steps", "2", "--shift", "0"])  # fmt: skip
    run(["train-tokenizer", *common, "--tokenizer", "vq", "--out", str(tmp_path / "tok"), "--steps", "4",
         "--batch-size", "16", "--width", "8", "--latent-dim", "8", "--codebook-size", "32"])  # fmt: skip
    model = tmp_path / "model"
    run(["train", *common, "--tokenizer", str(tmp_path / "tok"), "--order", "raster", "--out", str(model),
         "--preset", "tiny", "--steps", "4", "--batch-size", "16", "--warmup-steps", "1"])  # fmt: skip
    capsys.readouterr()
    arguments = ["tune", *common, "--model", str(model), "--classifier", str(tmp_path / "classifier"), "--num", "20",
                 "--batch-size", "20"]  # fmt: skip
    run([*arguments, "--dry-run"])
    assert not (model / "sampling.json").exists() and "not written" in capsys.readouterr().out
    run(arguments)
    printed = capsys.readouterr().out
    assert printed.count("FID") == 8 and "recommended: cfg" in printed
    document = json.loads((model / "sampling.json").read_text())
    assert "measured by argen tune" in document["chosen_by"] and document["chosen_by"].count(": FID ") == 8
    assert Pipeline.from_pretrained(model).recommended == document["recommended"]
