"""`argen demo` on tiny checkpoints made here: a page that references pictures that exist, for every order."""

import json
import re

import pytest
from conftest import write_idx_dataset
from PIL import Image

from argen.cli import run
from argen.errors import ArgenError
from argen.orders import ORDERS, default_tokenizers

TOKENIZER_FOR = default_tokenizers()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data = write_idx_dataset(root / "idx", train=64, test=16, size=12)
    common = ["--data", "mnist", "--data-dir", str(data), "--no-progress"]
    shipped = root / "checkpoints"
    for kind in sorted(set(TOKENIZER_FOR.values())):
        run(["train-tokenizer", *common, "--tokenizer", kind, "--out", str(root / kind), "--steps", "3",
             "--batch-size", "16", "--width", "8", "--latent-dim", "8", "--codebook-size", "32"])  # fmt: skip
    for order in ORDERS:
        run(["train", *common, "--tokenizer", str(root / TOKENIZER_FOR[order]), "--order", order, "--out",
             str(shipped / order), "--preset", "tiny", "--steps", "3", "--batch-size", "16"])  # fmt: skip
    run(["train-classifier", *common, "--out", str(shipped / "classifier"), "--steps", "3", "--batch-size", "16",
         "--width", "8"])  # fmt: skip
    return shipped


def test_demo_writes_a_page_with_every_order(checkpoints, tmp_path, capsys):
    out = tmp_path / "demo"
    run(["demo", "--checkpoints", str(checkpoints), "--out", str(out), "--per-label", "2", "--no-progress"])
    page = (out / "index.html").read_text()
    for order in ORDERS:
        assert f"<h2>{order}:" in page
    for source in re.findall(r'src="([^"]+)"', page):
        assert (out / source).is_file(), source
    assert Image.open(out / "progress-frequency.gif").n_frames > 1
    summary = json.loads((out / "demo.json").read_text())
    assert [row["order"] for row in summary["orders"]] == list(ORDERS)
    steps = {row["order"]: row["steps"] for row in summary["orders"]}
    assert steps["raster"] == 9  # a 3×3 latent: one pass per token
    assert steps["scale"] == steps["frequency"] < steps["neighbor"] < steps["raster"]
    for row in summary["orders"]:
        assert row["images_per_second"] > 0 and 0.0 <= row["demo_class_accuracy"] <= 1.0
        assert row["images_timed"] == 20  # 10 classes × 2
    assert "run <code>argen bench --evaluate-only</code>" in page  # no results.json yet
    # demo.png: the four orders' grids side by side (each at least 2 samples of 12 px wide); the grid files themselves
    # are enlarged to 64-px cells (12 px × 6 = 72, nearest)
    assert Image.open(out / "demo.png").width > 4 * 2 * 12
    assert Image.open(out / "samples-raster.png").width >= 2 * 72
    assert "index.html" in capsys.readouterr().out
    threads = summary["threads"]
    assert f"with {threads} thread{'' if threads == 1 else 's'}.</p>" in page and "with 1 threads" not in page


def test_demo_shows_the_measured_quality_table(checkpoints, tmp_path):
    measured = {
        "command": "argen bench --data mnist --evaluate-only",
        "cfg_scale": 1.5,
        "real": {"images": 16, "fid": 0.5, "kid": 0.001, "class_accuracy": 0.9},
        "orders": {"frequency": {"images": 40, "fid": 12.25, "kid": 0.0123, "class_accuracy": 0.875}},
    }
    (checkpoints / "results.json").write_text(json.dumps(measured))
    recommended = checkpoints / "scale" / "sampling.json"
    recommended.write_text(json.dumps({"recommended": {"cfg_scale": 1.5, "top_k": 10}}))
    try:
        run(["demo", "--checkpoints", str(checkpoints), "--out", str(tmp_path), "--per-label", "1", "--no-progress"])
    finally:
        (checkpoints / "results.json").unlink()
        recommended.unlink()
    page = (tmp_path / "index.html").read_text()
    assert "argen bench --data mnist --evaluate-only" in page
    assert "<td>frequency</td><td>40</td><td>12.25</td><td>12.30</td>" in page and "87.5 %" in page
    assert "real test images (floor)" in page
    assert "so the two figures for one model differ" in page  # the two images/s columns explained
    rows = {row["order"]: row for row in json.loads((tmp_path / "demo.json").read_text())["orders"]}
    assert rows["scale"]["sampling"]["cfg_scale"] == 1.5 and rows["scale"]["sampling"]["top_k"] == 10  # sampling.json
    assert rows["raster"]["sampling"]["cfg_scale"] == 1.0  # no recommendation: the library default
    assert "scale: guidance 1.5, top-k 10" in page


def test_demo_refuses_folders_without_models(tmp_path):
    with pytest.raises(ArgenError, match="does not exist"):
        run(["demo", "--checkpoints", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    with pytest.raises(ArgenError, match="holds no model directory"):
        run(["demo", "--checkpoints", str(tmp_path), "--out", str(tmp_path / "out")])
