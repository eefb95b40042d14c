"""Quality of the training-free accelerators: `argen eval` of SJD and CoDe beside plain decoding, same settings.

    OMP_NUM_THREADS=1 python bench/accelerators.py --checkpoints checkpoints/fashion-mnist --out runs/accel

Plain decoding's rows come from CHECKPOINTS/results.json (`argen bench --evaluate-only`, 10 000 images, cfg 2,
seed 0, batch 100); every accelerated variant is scored by `argen eval` with the same images count, guidance, seed
and batch, so FID differences are the sampler's (plus the sampling noise of 10 000 images, which a second seed
shows). Speed is *not* judged here: each eval runs alone at a different moment on a shared machine; the
side-by-side speed ratios are bench/samplers.py (SJD) and bench/collaborative.py (CoDe). Rerunning reuses the
JSON files already in OUT. Writes OUT/accelerators.md and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# (name, model order, extra `argen eval` flags); refiners live in CHECKPOINTS/refiners/<order>
VARIANTS = [
    ("raster-jacobi", "raster", ["--sampler", "jacobi", "--window", "16"]),
    ("neighbor-jacobi", "neighbor", ["--sampler", "jacobi", "--window", "4"]),
    ("frequency-code3", "frequency", ["--sampler", "collaborative", "--draft-steps", "3"]),
    ("frequency-code4", "frequency", ["--sampler", "collaborative", "--draft-steps", "4"]),
    ("frequency-small", "frequency", ["--refiner-alone"]),
    ("scale-code3", "scale", ["--sampler", "collaborative", "--draft-steps", "3"]),
    ("scale-code4", "scale", ["--sampler", "collaborative", "--draft-steps", "4"]),
    ("scale-small", "scale", ["--refiner-alone"]),
]


def evaluate(name: str, order: str, flags: list[str], arguments: argparse.Namespace) -> dict:
    path = Path(arguments.out) / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    checkpoints = Path(arguments.checkpoints)
    refiner = checkpoints / "refiners" / order
    model = refiner if flags == ["--refiner-alone"] else checkpoints / order
    if "collaborative" in flags:
        flags = [*flags, "--refiner", str(refiner)]
    flags = [flag for flag in flags if flag != "--refiner-alone"]
    command = [sys.executable, "-m", "argen", "eval", "--data", arguments.data, "--model", str(model),
               "--num", str(arguments.num), "--cfg-scale", str(arguments.cfg_scale), "--seed", "0",
               "--batch-size", "100", "--no-progress", "--json", str(path), *flags]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
    return json.loads(path.read_text())


def row(name: str, sampler: str, results: dict, baseline: dict | None) -> str:
    ratio = f"{results['fid'] / baseline['fid']:.2f}" if baseline else "1.00"
    return (
        f"| {name} | {sampler} | {results['forward_passes_per_image']:.1f} | {results['fid']:.2f} | {ratio} | "
        f"{results['kid'] * 1000:.2f} | {results['precision']:.3f} | {results['recall']:.3f} | "
        f"{results['class_accuracy'] * 100:.1f} % | {results['images_per_second']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="checkpoints/fashion-mnist")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--num", type=int, default=10000)
    parser.add_argument("--cfg-scale", type=float, default=2.0)
    parser.add_argument("--out", default="runs/accel")
    parser.add_argument("--variants", help="comma-separated subset of: " + ", ".join(name for name, *_ in VARIANTS))
    arguments = parser.parse_args()
    Path(arguments.out).mkdir(parents=True, exist_ok=True)
    plain = json.loads((Path(arguments.checkpoints) / "results.json").read_text())["orders"]
    chosen = set(arguments.variants.split(",")) if arguments.variants else {name for name, *_ in VARIANTS}
    lines = [
        f"`OMP_NUM_THREADS=1 python bench/accelerators.py --checkpoints {arguments.checkpoints}` — "
        f"{arguments.num} images each, cfg {arguments.cfg_scale}, seed 0, batch 100; FID ratio against plain "
        "decoding of the same model (the drafter for CoDe); images/s from separate runs on a shared machine.",
        "",
        "| model | sampler | forward passes/img | FID | FID ÷ plain | KID×1000 | precision | recall | class accuracy "
        "| images/s (eval) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for order in ("raster", "neighbor", "frequency", "scale"):
        lines.append(row(order, "plain", plain[order], None))
        for name, variant_order, flags in VARIANTS:
            if variant_order != order or name not in chosen:
                continue
            results = evaluate(name, variant_order, flags, arguments)
            if flags == ["--refiner-alone"]:
                label = "plain, small refiner alone"
            elif "jacobi" in flags:
                label = f"SJD window {flags[flags.index('--window') + 1]}"
            else:
                label = f"CoDe, {flags[flags.index('--draft-steps') + 1]} draft steps + small refiner"
            lines.append(row(order, label, results, plain[order]))
    table = "\n".join(lines) + "\n"
    (Path(arguments.out) / "accelerators.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
