"""train-tokenizer → eval-tokenizer → encode, as a user runs them, and the token cache's refusal of a stranger."""

import json

import pytest
import torch

from argen.checkpoint import release_fingerprint
from argen.cli import run
from argen.errors import ArgenError
from argen.tokenizers import load_tokenizer
from argen.tokenizers.cache import load_token_cache


def train(idx_dataset, out, kind, *extra):
    run([
        "train-tokenizer", "--data", "mnist", "--data-dir", str(idx_dataset), "--tokenizer", kind, "--out", str(out),
        "--steps", "30", "--batch-size", "16", "--width", "8", "--latent-dim", "8", "--codebook-size", "64",
        "--image-size", "16", "--no-progress", "--warmup-steps", "5", *extra,
    ])  # fmt: skip


@pytest.mark.parametrize("kind", ["vq", "fsq", "multiscale", "frequency"])
def test_train_eval_encode(kind, idx_dataset, tmp_path, capsys):
    out = tmp_path / kind
    train(idx_dataset, out, kind, *(["--fsq-levels", "4,4,4"] if kind == "fsq" else []))
    tokenizer, document = load_tokenizer(out)
    assert document["kind"] == "tokenizer" and tokenizer.config.kind == kind
    assert tokenizer.config.image_size == 16 and tokenizer.config.channels == 1
    # 16×16 images with two stride-2 stages give a 4×4 latent; multi-grid kinds get scales ending at 4.
    assert tokenizer.grid_shapes[-1] == (4, 4)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"]
    assert "psnr" in records[-1] and "usage" in records[-1]

    results_path = tmp_path / f"{kind}.json"
    run(["eval-tokenizer", "--tokenizer", str(out), "--data", "mnist", "--data-dir", str(idx_dataset),
         "--json", str(results_path), "--no-progress"])  # fmt: skip
    printed = capsys.readouterr().out
    results = json.loads(results_path.read_text())
    assert results["images"] == 32 and 0 < results["psnr"] < 100 and -1 <= results["ssim"] <= 1
    assert 0 < results["codebook_usage"] <= 1 and results["perplexity"] >= 1
    assert results["tokens_per_image"] == sum(h * w for h, w in tokenizer.grid_shapes)
    assert results["bits_per_image_entropy"] <= results["bits_per_image_nominal"] + 1e-6
    assert "psnr" in printed and (out / "reconstructions-test.png").exists()

    cache = tmp_path / f"{kind}.safetensors"
    run(["encode", "--tokenizer", str(out), "--data", "mnist", "--data-dir", str(idx_dataset), "--out", str(cache),
         "--no-progress"])  # fmt: skip
    ids, labels, metadata = load_token_cache(cache, fingerprint=release_fingerprint(out))
    assert [tuple(grid.shape[1:]) for grid in ids] == tokenizer.grid_shapes
    assert ids[0].shape[0] == 64 and labels.shape == (64,) and metadata["split"] == "train"
    assert all(grid.dtype == torch.long and grid.min() >= 0 and grid.max() < tokenizer.codebook_size for grid in ids)


def test_cache_made_by_another_tokenizer_is_refused(idx_dataset, tmp_path):
    train(idx_dataset, tmp_path / "a", "vq")
    train(idx_dataset, tmp_path / "b", "vq", "--seed", "1")
    cache = tmp_path / "tokens.safetensors"
    run(["encode", "--tokenizer", str(tmp_path / "a"), "--data", "mnist", "--data-dir", str(idx_dataset),
         "--out", str(cache), "--no-progress"])  # fmt: skip
    with pytest.raises(ArgenError, match="encoded by another tokenizer"):
        load_token_cache(cache, fingerprint=release_fingerprint(tmp_path / "b"))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ArgenError, match="not a readable token cache"):
        load_token_cache(tmp_path / "junk.safetensors", fingerprint="x")


def test_tokenizer_release_of_wrong_kind_is_refused(idx_dataset, tmp_path):
    run(["train-classifier", "--data", "mnist", "--data-dir", str(idx_dataset), "--out", str(tmp_path / "c"),
         "--steps", "2", "--batch-size", "16", "--width", "4", "--no-progress"])  # fmt: skip
    with pytest.raises(ArgenError, match="'classifier' checkpoint.*tokenizer"):
        load_tokenizer(tmp_path / "c")


def test_no_progress_silences_the_folder_decoding_bar(tmp_path, capsys, monkeypatch):
    """An image folder is decoded with a progress bar; --no-progress must silence it like every other bar."""
    from PIL import Image

    # Every command decodes afresh: with the decoded-image cache the later ones would read arrays, showing no bar.
    monkeypatch.setenv("ARGEN_NO_CACHE", "1")

    generator = torch.Generator().manual_seed(0)
    for label in ("a", "b"):
        (tmp_path / "pictures" / label).mkdir(parents=True)
        for index in range(12):
            pixels = torch.randint(0, 256, (10, 14, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "pictures" / label / f"{index}.png")
    data = f"folder:{tmp_path / 'pictures'}"
    out = tmp_path / "tokenizer"
    run([
        "train-tokenizer", "--data", data, "--tokenizer", "vq", "--out", str(out), "--steps", "2", "--batch-size", "4",
        "--width", "4", "--latent-dim", "4", "--codebook-size", "8", "--image-size", "8", "--no-progress",
    ])  # fmt: skip
    ids = tmp_path / "ids.safetensors"
    run(["encode", "--tokenizer", str(out), "--data", data, "--out", str(ids), "--no-progress"])
    err = capsys.readouterr().err
    assert "decoding images" not in err and "%|" not in err, err
    run(["encode", "--tokenizer", str(out), "--data", data, "--out", str(tmp_path / "again.safetensors")])
    assert "decoding images" in capsys.readouterr().err  # the bar is there when progress is wanted
