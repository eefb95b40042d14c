"""NFIG's band allocation ablated: {paper, grid} × {carry error on, off} on one tokenizer and one generator recipe.

    OMP_NUM_THREADS=1 python bench/band_ablation.py --runs runs/fashion-mnist/ablation --out runs/ablation

The runs are configs/fashion-mnist/ablation/tokenizer-frequency-VARIANT.toml (the shipped tokenizer recipe, 500
steps) and configs/fashion-mnist/ablation/frequency-VARIANT.toml (a 0.23 M next-frequency generator, 500 steps),
VARIANT in paper-carry, paper-nocarry, grid-carry, grid-nocarry. Per variant: frequencies per band, the tokenizer's
test PSNR / SSIM / codebook usage and its reconstructions' frequency keep score (`argen eval-tokenizer`), and the
generator's FID and class accuracy on 2 000 samples (guidance 2, seed 0) against the training images (`argen eval`).
Writes OUT/ablation.json and OUT/ablation.md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VARIANTS = ["paper-carry", "paper-nocarry", "grid-carry", "grid-nocarry"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/fashion-mnist/ablation")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--classifier", default="checkpoints/fashion-mnist/classifier")
    parser.add_argument("--num", type=int, default=2000, help="generated images per variant")
    arguments = parser.parse_args(argv)
    from argen.metrics.evaluate import (
        evaluate_generator,
        evaluate_tokenizer,
        load_evaluation_classifier,
        reference_features,
    )

    runs, out = Path(arguments.runs), Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    classifier, _ = load_evaluation_classifier(arguments.classifier)
    reference = reference_features(classifier, "fashion-mnist", split="train", progress=False)
    rows = {}
    for variant in VARIANTS:
        tokenizer, generator = runs / f"tokenizer-frequency-{variant}", runs / f"frequency-{variant}"
        if not (generator / "generator" / "config.json").is_file():
            print(f"skipping {variant}: {generator} is not trained yet")
            continue
        cached = out / f"{variant}.json"
        if cached.is_file():
            rows[variant] = json.loads(cached.read_text())
            continue
        quality = evaluate_tokenizer(tokenizer, "fashion-mnist", progress=False)
        samples = evaluate_generator(
            classifier=arguments.classifier, data="fashion-mnist", model=generator, num_images=arguments.num,
            reference=reference, cfg_scale=2.0, seed=0, progress=False,
        )  # fmt: skip
        rows[variant] = {
            "tokenizer": quality,
            "generator": {k: v for k, v in samples.items() if k != "radial_power_spectrum"},
        }
        cached.write_text(json.dumps(rows[variant], indent=2) + "\n")
    (out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "| allocation | carry error | frequencies per band | PSNR (dB) ↑ | SSIM ↑ | codebook usage | "
        "reconstruction keep score ↑ | FID (2 000) ↓ | class accuracy ↑ | samples' keep score ↑ |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, row in rows.items():
        allocation, carry = variant.split("-")
        tokenizer, generator = row["tokenizer"], row["generator"]
        lines.append(
            f"| {allocation} | {'on' if carry == 'carry' else 'off'} | {tokenizer['frequencies_per_band']} | "
            f"{tokenizer['psnr']:.2f} | {tokenizer['ssim']:.3f} | {tokenizer['codebook_usage']:.0%} | "
            f"{tokenizer['frequency_keep_score']:.3f} | {generator['fid']:.3f} | {generator['class_accuracy']:.1%} | "
            f"{generator['frequency_keep_score']:.3f} |"
        )
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
