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

# (name, model order, extra `argen eval` flags, images); refiners live in CHECKPOINTS/refiners/<order>. SJD at batch
# 100 runs several times slower than plain decoding on a CPU (every pass feeds the whole window), so its comparison
# uses 2 000 images, with a plain-decoding row at 2 000 images to compare with (FID depends on the image count);
# raster-jacobi-10k compares with the 10 000-image plain row of results.json.
VARIANTS = [
    ("raster-plain-2k", "raster", [], 2000),
    ("raster-jacobi-2k", "raster", ["--sampler", "jacobi", "--window", "16"], 2000),
    ("raster-jacobi-10k", "raster", ["--sampler", "jacobi", "--window", "16"], 10000),
    ("neighbor-plain-2k", "neighbor", [], 2000),
    ("neighbor-jacobi-2k", "neighbor", ["--sampler", "jacobi", "--window", "4"], 2000),
    ("frequency-code3", "frequency", ["--sampler", "collaborative", "--draft-steps", "3"], 10000),
    ("frequency-code4", "frequency", ["--sampler", "collaborative", "--draft-steps", "4"], 10000),
    ("frequency-small", "frequency", ["--refiner-alone"], 10000),
    ("scale-code3", "scale", ["--sampler", "collaborative", "--draft-steps", "3"], 10000),
    ("scale-code4", "scale", ["--sampler", "collaborative", "--draft-steps", "4"], 10000),
    ("scale-small", "scale", ["--refiner-alone"], 10000),
]


def evaluate(name: str, order: str, flags: list[str], num: int, arguments: argparse.Namespace) -> dict:
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
               "--num", str(num), "--cfg-scale", str(arguments.cfg_scale), "--seed", "0",
               "--batch-size", "100", "--no-progress", "--json", str(path), *flags]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
    return json.loads(path.read_text())


def row(name: str, sampler: str, results: dict, baseline: dict | None) -> str:
    ratio = f"{results['fid'] / baseline['fid']:.2f}" if baseline else "–"
    return (
        f"| {name} | {sampler} | {results['images']} | {results['forward_passes_per_image']:.1f} | "
        f"{results['fid']:.2f} | {ratio} | "
        f"{results['kid'] * 1000:.2f} | {results['precision']:.3f} | {results['recall']:.3f} | "
        f"{results['class_accuracy'] * 100:.1f} % | {results['images_per_second']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="checkpoints/fashion-mnist")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--cfg-scale", type=float, default=2.0)
    parser.add_argument("--out", default="runs/accel")
    parser.add_argument("--variants", help="comma-separated subset of: " + ", ".join(name for name, *_ in VARIANTS))
    arguments = parser.parse_args()
    Path(arguments.out).mkdir(parents=True, exist_ok=True)
    chosen = set(arguments.variants.split(",")) if arguments.variants else {name for name, *_ in VARIANTS}
    measured = {
        name: evaluate(name, order, flags, num, arguments) for name, order, flags, num in VARIANTS if name in chosen
    }
    # plain decoding at 10 000 images is `argen bench --evaluate-only`'s; read it once every variant is measured
    plain = json.loads((Path(arguments.checkpoints) / "results.json").read_text())["orders"]
    lines = [
        f"`OMP_NUM_THREADS=1 python bench/accelerators.py --checkpoints {arguments.checkpoints}` — cfg "
        f"{arguments.cfg_scale}, seed 0, batch 100; FID ratio against plain decoding of the same model (the drafter "
        "for CoDe) with the same number of images; images/s from separate runs on a shared machine.",
        "",
        "| model | sampler | images | forward passes/img | FID | FID ÷ plain | KID×1000 | precision | recall "
        "| class accuracy | images/s (eval) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for order in ("raster", "neighbor", "frequency", "scale"):
        baselines = {plain[order]["images"]: plain[order]}
        lines.append(row(order, "plain", plain[order], None))
        for name, variant_order, flags, num in VARIANTS:
            if variant_order != order or name not in chosen:
                continue
            # the plain rows (no flags) are the baselines of their image count; a small refiner alone has none
            results = measured[name]
            if not flags:
                baselines[num] = results
                lines.append(row(order, "plain", results, None))
                continue
            if flags == ["--refiner-alone"]:
                label = "plain, small refiner alone"
            elif "jacobi" in flags:
                label = f"SJD window {flags[flags.index('--window') + 1]}"
            else:
                label = f"CoDe, {flags[flags.index('--draft-steps') + 1]} draft steps + small refiner"
            lines.append(row(order, label, results, baselines.get(num)))
    table = "\n".join(lines) + "\n"
    (Path(arguments.out) / "accelerators.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
