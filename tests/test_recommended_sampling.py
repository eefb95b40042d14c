"""Recommended sampling settings travel with the model (MODEL/sampling.json): Pipeline, `argen sample` and
`argen eval` use them when the caller gives none, an explicit argument wins, and a bad file is refused in one line."""

import json

import pytest
import torch
from test_collaborative import save_model_directory, tiny_tokenizer

from argen.errors import ArgenError
from argen.model_directory import SAMPLING_DEFAULTS, read_recommended_sampling
from argen.pipeline import Pipeline


@pytest.fixture(scope="module")
def model_directory(tmp_path_factory):
    directory = tmp_path_factory.mktemp("recommended") / "model"
    save_model_directory(directory, tiny_tokenizer("multiscale", seed=0), "scale", width=32, depth=2, seed=0)
    return directory


def write(directory, recommended):
    (directory / "sampling.json").write_text(json.dumps({"recommended": recommended, "chosen_by": "a test"}))


def test_pipeline_uses_the_models_settings_unless_given(model_directory):
    plain = Pipeline.from_pretrained(model_directory)
    assert plain.recommended == {} and plain.sampling_settings() == SAMPLING_DEFAULTS
    write(model_directory, {"cfg_scale": 3.0, "top_k": 5})
    try:
        pipeline = Pipeline.from_pretrained(model_directory)
        assert pipeline.sampling_settings()["cfg_scale"] == 3.0
        assert pipeline.sampling_settings(cfg_scale=1.0)["cfg_scale"] == 1.0  # an explicit argument wins
        labels = [0, 1, 2, 0]
        recommended = pipeline(labels, seed=4)
        explicit = plain(labels, seed=4, cfg_scale=3.0, top_k=5)
        default = plain(labels, seed=4)
        assert all(torch.equal(a, b) for a, b in zip(recommended.ids, explicit.ids))
        assert not all(torch.equal(a, b) for a, b in zip(recommended.ids, default.ids))
        copy = model_directory.parent / "copy"
        pipeline.save_pretrained(copy)  # the recommendation travels with a saved copy
        assert read_recommended_sampling(copy) == {"cfg_scale": 3.0, "top_k": 5}
    finally:
        (model_directory / "sampling.json").unlink()


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "not a JSON object"),
        ('{"recommended": {"guidance": 2}}', "unknown sampling setting"),
        ('{"recommended": {"cfg_scale": "high"}}', "cfg_scale must be a number"),
    ],  # fmt: skip
)
def test_bad_files_are_refused(tmp_path, content, message):
    (tmp_path / "sampling.json").write_text(content)
    with pytest.raises(ArgenError, match=message):
        read_recommended_sampling(tmp_path)


def test_argen_sample_prints_and_uses_the_recommendation(model_directory, tmp_path, capsys):
    from argen.cli import run

    write(model_directory, {"cfg_scale": 2.5})
    try:
        out = str(tmp_path / "a.png")
        run(["sample", "--model", str(model_directory), "--labels", "0", "--per-label", "2", "--out", out])
        assert "cfg_scale 2.5 (model)" in capsys.readouterr().out
        run(["sample", "--model", str(model_directory), "--labels", "0", "--per-label", "2", "--cfg-scale", "1",
             "--out", str(tmp_path / "b.png")])  # fmt: skip
        printed = capsys.readouterr().out
        assert "cfg_scale 1.0" in printed and "(model)" not in printed.split("cfg_scale 1.0")[1].split(",")[0]
    finally:
        (model_directory / "sampling.json").unlink()


def test_export_carries_the_recommendation(model_directory, tmp_path):
    from argen.cli import run

    write(model_directory, {"cfg_scale": 2.0, "cfg_schedule": "linear"})
    try:
        run(["export", "--model", str(model_directory), "--out", str(tmp_path / "shipped")])
    finally:
        (model_directory / "sampling.json").unlink()
    assert read_recommended_sampling(tmp_path / "shipped") == {"cfg_scale": 2.0, "cfg_schedule": "linear"}
    assert json.loads((tmp_path / "shipped" / "sampling.json").read_text())["chosen_by"] == "a test"
