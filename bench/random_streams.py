"""Does a seed still give the same images? Record the shipped models' samples, then compare two recordings.

    # with the code before a change (e.g. a worktree of the old commit on PYTHONPATH), then with the new code
    PYTHONPATH=/tmp/old python bench/random_streams.py record /tmp/before.npz
    python bench/random_streams.py record /tmp/after.npz
    python bench/random_streams.py compare /tmp/before.npz /tmp/after.npz

100 images per order × cfg 1 and 2 × batch 1 and 10 (seeds 0..99, labels cycling over the classes), top-k off (the
shipped models' recommended draw); `compare` prints, per setting, how many images have identical ids and identical
pixels, and the largest pixel difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def record(path: str, models: Path) -> None:
    from argen.pipeline import Pipeline

    recorded = {}
    for order in ("raster", "scale", "frequency", "neighbor"):
        pipeline = Pipeline.from_pretrained(models / order)
        classes = max(pipeline.model.config.num_classes, 1)
        for cfg in (1.0, 2.0):
            for batch in (1, 10):
                pixels, ids = [], []
                for seed in range(0, 100, batch):
                    labels = [(seed + index) % classes for index in range(batch)]
                    result = pipeline(labels, seed=seed, cfg_scale=cfg, top_k=0)
                    pixels.append(result.pixels.numpy())
                    ids.append(torch.cat([grid.flatten(1) for grid in result.ids], 1).numpy())
                recorded[f"{order}-cfg{cfg:g}-batch{batch}-pixels"] = np.concatenate(pixels)
                recorded[f"{order}-cfg{cfg:g}-batch{batch}-ids"] = np.concatenate(ids)
    np.savez(path, **recorded)
    print(f"wrote {path}")


def compare(first: str, second: str) -> None:
    a, b = np.load(first), np.load(second)
    for key in a.files:
        if not key.endswith("-ids"):
            continue
        setting = key[: -len("-ids")]
        pixels_a, pixels_b = a[setting + "-pixels"].astype(int), b[setting + "-pixels"].astype(int)
        same_ids = int((a[key] == b[key]).all(axis=1).sum())
        same_pixels = int((pixels_a == pixels_b).reshape(len(pixels_a), -1).all(axis=1).sum())
        print(
            f"{setting}: identical ids {same_ids}/{len(a[key])}, identical pixels {same_pixels}/{len(pixels_a)}, "
            f"largest pixel difference {np.abs(pixels_a - pixels_b).max()}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    recording = commands.add_parser("record", help="sample the shipped models into an .npz")
    recording.add_argument("out")
    recording.add_argument("--models", default=str(ROOT / "checkpoints/fashion-mnist"), help="directory of ORDER/")
    comparing = commands.add_parser("compare", help="compare two recordings")
    comparing.add_argument("first")
    comparing.add_argument("second")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    if arguments.command == "record":
        record(arguments.out, Path(arguments.models))
    else:
        compare(arguments.first, arguments.second)


if __name__ == "__main__":
    sys.exit(main())
