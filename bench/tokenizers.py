"""Train and evaluate tokenizers on Fashion-MNIST with argen's own commands; print the table of docs/tokenizers.md.

    python bench/tokenizers.py --kinds vq,fsq,multiscale,frequency --steps 2000 --out runs/tokenizers

Each kind is trained with `argen train-tokenizer` (rerunning resumes, so an interrupted bench continues) and
measured with `argen eval-tokenizer` on the 10000 test images. `--parallel 2` runs two trainings side by side with
one thread each, which is what a 2-core machine does best. The table is written to OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The recipe: one setting for all kinds, so the table compares quantizers, not tuning effort.
RECIPE = ["--width", "16", "--latent-dim", "32", "--reconstruction", "l1", "--codebook-size", "1024",
          "--batch-size", "32", "--learning-rate", "2e-3", "--warmup-steps", "200", "--save-every", "200",
          "--no-progress"]  # fmt: skip


def run(command: list[str], *, threads: int) -> None:
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=environment)


def bench_kind(kind: str, *, steps: int, minutes: float, out: Path, data: str, threads: int, report: bool) -> dict:
    """Train (or resume) one tokenizer under a step budget capped by a time budget, then evaluate it.

    With ``report`` only the results already written by an earlier run are read back (no training, no eval).
    """
    directory = out / kind
    results_path = out / f"{kind}.json"
    if report:
        return collect(directory, results_path)
    run([sys.executable, "-m", "argen", "train-tokenizer", "--data", data, "--tokenizer", kind, "--out", str(directory),
         "--steps", str(steps), "--minutes", str(minutes), *RECIPE], threads=threads)  # fmt: skip
    run([sys.executable, "-m", "argen", "eval-tokenizer", "--tokenizer", str(directory), "--data", data,
         "--json", str(results_path), "--no-progress"], threads=threads)  # fmt: skip
    return collect(directory, results_path)


def collect(directory: Path, results_path: Path) -> dict:
    results = json.loads(results_path.read_text())
    state = json.loads((directory / "config.json").read_text())["extra"]
    results["steps"] = state["step"]
    metrics = (directory / "metrics.jsonl").read_text().splitlines()
    results["minutes"] = json.loads(metrics[-1])["elapsed_seconds"] / 60
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="vq,fsq,multiscale,frequency")
    parser.add_argument("--steps", type=int, default=2000, help="training steps per tokenizer (batch 32)")
    parser.add_argument("--minutes", type=float, default=20.0, help="time cap per tokenizer")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--out", default="runs/tokenizers")
    parser.add_argument("--parallel", type=int, default=2, help="trainings at once (one thread each when > 1)")
    parser.add_argument("--report", action="store_true", help="only print the table of an earlier run's results")
    arguments = parser.parse_args()
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    kinds = arguments.kinds.split(",")
    threads = 1 if arguments.parallel > 1 else os.cpu_count() or 1
    with ThreadPoolExecutor(arguments.parallel) as pool:
        results = list(
            pool.map(
                lambda kind: bench_kind(
                    kind,
                    steps=arguments.steps,
                    minutes=arguments.minutes,
                    out=out,
                    data=arguments.data,
                    threads=threads,
                    report=arguments.report,
                ),
                kinds,
            )  # fmt: skip
        )
    lines = [
        "| tokenizer | grids | tokens | steps | train min | PSNR (dB) | SSIM | codebook usage | perplexity "
        "| bits/image (entropy) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        config = json.loads((out / result["kind"] / "config.json").read_text())["config"]
        multi = result["kind"] in ("multiscale", "frequency")
        side = round(result["tokens_per_image"] ** 0.5)
        grids = ",".join(str(scale) for scale in config["scales"]) if multi else f"{side}×{side}"
        lines.append(
            f"| {result['kind']} | {grids} | {result['tokens_per_image']} | {result['steps']} | "
            f"{result['minutes']:.1f} | {result['psnr']:.2f} | {result['ssim']:.3f} | {result['codebook_usage']:.1%} | "
            f"{result['perplexity']:.0f} | {result['bits_per_image_entropy']:.0f} |"
        )
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
