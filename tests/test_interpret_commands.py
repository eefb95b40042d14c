"""`argen activations`, `argen train-sae` and `argen features` end to end on the shipped raster model."""

import json

from argen.cli import main

RASTER = "checkpoints/fashion-mnist/raster"


def test_activations_train_sae_and_features(idx_dataset, tmp_path, capsys):
    main(["activations", "--model", RASTER, "--list-hooks"])
    assert "blocks.1.resid_post" in capsys.readouterr().out
    acts, sae, page = tmp_path / "acts", tmp_path / "sae", tmp_path / "page"
    main([
        "activations", "--model", RASTER, "--hook", "blocks.1.resid_post", "--hook", "blocks.0.resid_pre",
        "--num", "24", "--out", str(acts), "--data-dir", str(idx_dataset), "--no-progress",
    ])  # fmt: skip
    main([
        "train-sae", "--activations", str(acts), "--hook", "blocks.1.resid_post", "--latents", "64", "--k", "8",
        "--steps", "5", "--batch-size", "64", "--held-out", "0.25", "--out", str(sae), "--no-progress",
    ])  # fmt: skip
    metrics = json.loads((sae / "metrics.json").read_text())
    assert {"l0", "fvu", "dead_fraction", "delta_loss"} <= set(metrics)
    assert metrics["l0"] <= 8 and metrics["held_out_sequences"] == 6
    main(["features", "--sae", str(sae), "--out", str(page), "--features", "3", "--max-sequences", "24"])
    index = (page / "index.html").read_text()
    assert index.count("feature-") >= 3
    explanations = json.loads((page / "explanations.json").read_text())
    assert all("detection" in entry for entry in explanations.values() if entry)
