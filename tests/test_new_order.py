"""Adding an order is one file: a copy of raster.py under another name, dropped into argen/orders/ of a copy of the
package, is offered by `argen train --order`, trains, samples (also with the jacobi sampler, which it qualifies
for by its capabilities) and is listed by the registry the contract tests are parametrised over. A sampler is one
file too: its option becomes a flag of `argen sample`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

PACKAGE = Path(__file__).resolve().parent.parent / "argen"

SCRIPT = """
import sys
from argen.cli import main
from argen.orders import ORDERS
from argen.samplers import SAMPLERS

data, root = sys.argv[1], sys.argv[2]
print("orders:", ",".join(ORDERS))
print("jacobi:", ",".join(SAMPLERS.info("jacobi").supported_orders()))
common = ["--data", "mnist", "--data-dir", data, "--no-progress"]
for argv in (
    ["train-tokenizer", *common, "--tokenizer", "vq", "--out", f"{root}/tokenizer", "--steps", "2",
     "--batch-size", "16", "--width", "8", "--latent-dim", "8", "--codebook-size", "16"],
    ["train", *common, "--tokenizer", f"{root}/tokenizer", "--order", "copied", "--out", f"{root}/model",
     "--preset", "tiny", "--steps", "2", "--batch-size", "16"],
    ["sample", "--model", f"{root}/model", "--labels", "0,1", "--per-label", "2", "--out", f"{root}/grid.png"],
    ["sample", "--model", f"{root}/model", "--labels", "0", "--per-label", "2", "--out", f"{root}/jacobi.png",
     "--sampler", "jacobi"],
    ["sample", "--model", f"{root}/model", "--labels", "0", "--per-label", "2", "--out", f"{root}/greedy.png",
     "--sampler", "greedy", "--greedy-note", "7"],
):
    main(argv)
"""

# A sampler in one file: plain decoding at temperature 0, with one option of its own.
GREEDY = """
from argen.samplers.ar import generate
from argen.samplers.base import SamplerInfo, SamplerOption, register_sampler

INFO = SamplerInfo(name="greedy", method="greedy decoding", help="the most likely id at every step",
                   options=(SamplerOption("greedy_note", type=int, help="printed, to show the option arrives"),))


@register_sampler(INFO)
def generate_greedy(model, order, tokenizer, *, callback=None, greedy_note=None, **request):
    print("greedy note:", greedy_note)
    return generate(model, order, tokenizer, callback=callback, **{**request, "temperature": 0.0})
"""


def test_a_new_order_is_one_new_file(tmp_path, idx_dataset):
    copy = tmp_path / "package"
    shutil.copytree(PACKAGE, copy / "argen", ignore=shutil.ignore_patterns("__pycache__"))
    raster = (PACKAGE / "orders" / "raster.py").read_text()
    order = raster.replace("class RasterOrder(Order):", "class CopiedOrder(Order):").replace(
        'name = "raster"', 'name = "copied"'
    )
    assert order != raster
    (copy / "argen" / "orders" / "copied.py").write_text(order)
    (copy / "argen" / "samplers" / "greedy.py").write_text(GREEDY)
    environment = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS="1")

    def argen(*argv: str) -> str:
        completed = subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=600
        )
        assert completed.returncode == 0, completed.stderr
        return completed.stdout

    assert str(copy) in argen("-c", "import argen; print(argen.__file__)")  # the copy, not the repository
    assert "copied" in argen("-m", "argen", "train", "--help").split("--order {")[1].split("}")[0].split(",")
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    printed = argen(str(script), str(idx_dataset), str(tmp_path))
    listed = dict(line.split(": ", 1) for line in printed.splitlines() if line.startswith(("orders:", "jacobi:")))
    assert set(listed["orders"].split(",")) == {"raster", "scale", "frequency", "neighbor", "copied"}
    assert set(listed["jacobi"].split(",")) == {"raster", "neighbor", "copied"}  # single-grid orders
    assert Image.open(tmp_path / "grid.png").size[0] > 0 and (tmp_path / "jacobi.png").is_file()
    assert "greedy note: 7" in printed and (tmp_path / "greedy.png").is_file()
    assert (tmp_path / "model" / "generator" / "config.json").read_text().count('"copied"') == 1
