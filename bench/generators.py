"""Train every generation order on Fashion-MNIST with argen's own commands, then sample a grid and a GIF of each.

    python bench/generators.py --orders raster,scale,frequency,neighbor --tokenizers runs/tokenizers \\
        --preset 1m --minutes 20 --out runs/generators --images docs

Each order trains on the tokenizer it needs (raster and neighbor on vq, scale on multiscale, frequency on frequency)
at the same preset, batch size, learning rate and time budget, so the grids compare orders, not tuning. Rerunning
resumes. Per order it writes IMAGES/samples-ORDER.png (one row per class, 8 samples each, seed 0) and
IMAGES/progress-ORDER.gif (the decoded images after every step), and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from argen.orders import ORDERS, default_tokenizers

TOKENIZER_FOR = default_tokenizers()  # each order's tokenizer kind, from the order's own file


def run(command: list[str], *, threads: int) -> str:
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, check=True, env=environment, capture_output=True, text=True).stdout


def bench_order(order: str, arguments: argparse.Namespace, *, threads: int) -> dict:
    out = Path(arguments.out) / order
    if arguments.report:
        return collect(order, out, (out / "sample.log").read_text())
    tokenizer = Path(arguments.tokenizers) / TOKENIZER_FOR[order]
    run([sys.executable, "-m", "argen", "train", "--tokenizer", str(tokenizer), "--order", order,
         "--data", arguments.data, "--out", str(out), "--preset", arguments.preset, "--minutes", str(arguments.minutes),
         "--batch-size", str(arguments.batch_size), "--learning-rate", str(arguments.learning_rate),
         "--warmup-steps", "200", "--save-every", "200", "--no-progress"], threads=threads)  # fmt: skip
    images = Path(arguments.images)
    images.mkdir(parents=True, exist_ok=True)
    printed = run([sys.executable, "-m", "argen", "sample", "--model", str(out), "--num", "8",
                   "--cfg-scale", str(arguments.cfg_scale), "--top-k", str(arguments.top_k), "--seed", "0",
                   "--out", str(images / f"samples-{order}.png"), "--progress", str(images / f"progress-{order}.gif"),
                   "--save-npz", str(out / "samples.npz")], threads=threads)  # fmt: skip
    (out / "sample.log").write_text(printed)
    return collect(order, out, printed)


def collect(order: str, out: Path, printed: str) -> dict:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "order": order,
        "tokenizer": TOKENIZER_FOR[order],
        "steps": records[-1]["step"],
        "minutes": records[-1]["elapsed_seconds"] / 60,
        "final_loss": records[-1]["loss"],
        "token_accuracy": records[-1].get("token_accuracy"),
        "sample_summary": printed.strip().splitlines()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", default=",".join(ORDERS))
    parser.add_argument("--tokenizers", default="runs/tokenizers", help="holds vq/, multiscale/, frequency/")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--preset", default="1m")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--cfg-scale", type=float, default=2.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--out", default="runs/generators")
    parser.add_argument("--images", default="docs")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="only print the table of an earlier run")
    arguments = parser.parse_args()
    threads = 1 if arguments.parallel > 1 else os.cpu_count() or 1
    with ThreadPoolExecutor(arguments.parallel) as pool:
        results = list(
            pool.map(lambda order: bench_order(order, arguments, threads=threads), arguments.orders.split(","))
        )
    lines = [
        "| order | tokenizer | steps | train min | final loss | token accuracy | sampling |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| {result['order']} | {result['tokenizer']} | {result['steps']} | {result['minutes']:.1f} | "
            f"{result['final_loss']:.3f} | {result['token_accuracy']:.3f} | {result['sample_summary']} |"
        )
    table = "\n".join(lines)
    Path(arguments.out, "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
