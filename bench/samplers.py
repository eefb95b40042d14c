"""Forward passes and wall time per image of speculative Jacobi decoding against plain decoding, on trained models.

    python bench/samplers.py --models runs/generators/raster,runs/generators/neighbor --images 32 --repeats 3

For each model directory (an `argen train` output with the raster or neighbor order) it generates the same labels
with the same seeds with ``sampler="ar"`` and ``sampler="jacobi"`` (both init modes), at batch 1 (one image at a
time, the latency case SJD targets) and at a batch of all images, and reports model calls per image and seconds per
image (medians over ``--repeats`` interleaved rounds) and the ratios. SJD samples the same distribution as plain
decoding (tests/test_jacobi.py proves it on a toy model with a chi-square test); quality beside it comes from
`argen eval` once that exists.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from argen.pipeline import Pipeline


def measure(pipeline: Pipeline, labels: list[int], *, batch: int, **options) -> tuple[float, float]:
    """Generate ``labels`` in batches of ``batch``; return (model calls per image, seconds per image)."""
    calls, start = 0, time.perf_counter()
    for index in range(0, len(labels), batch):
        output = pipeline(labels[index : index + batch], seed=index, **options)
        calls += output.forward_passes * len(output.images)  # a call serves every image of its batch
    return calls / len(labels), (time.perf_counter() - start) / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="runs/generators/raster,runs/generators/neighbor")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cfg-scale", type=float, default=2.0)
    parser.add_argument("--out", default="bench/results/samplers.md")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    variants = {
        "ar": {"sampler": "ar"},
        "jacobi random": {"sampler": "jacobi", "init": "random"},
        "jacobi neighbor": {"sampler": "jacobi", "init": "neighbor"},
    }
    lines = [
        f"`python bench/samplers.py --models {arguments.models} --images {arguments.images} "
        f"--repeats {arguments.repeats} --threads {arguments.threads} --cfg-scale {arguments.cfg_scale}`",
        "",
        "| model | order | sampler | batch | calls/img | s/img | calls ÷ ar | speed-up vs ar |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for directory in arguments.models.split(","):
        pipeline = Pipeline.from_pretrained(directory)
        classes = max(1, pipeline.model.config.num_classes)
        labels = [index % classes for index in range(arguments.images)]
        for batch in (1, arguments.images):
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
            for _ in range(arguments.repeats):
                for name, options in variants.items():  # interleaved, so load changes hit every variant alike
                    results[name].append(
                        measure(pipeline, labels, batch=batch, cfg_scale=arguments.cfg_scale, **options)
                    )
            base_calls = statistics.median(calls for calls, _ in results["ar"])
            base_seconds = statistics.median(seconds for _, seconds in results["ar"])
            for name in variants:
                calls = statistics.median(value for value, _ in results[name])
                seconds = statistics.median(value for _, value in results[name])
                lines.append(
                    f"| {Path(directory).name} | {pipeline.order.name} | {name} | {batch} | {calls:.1f} | "
                    f"{seconds:.3f} | {calls / base_calls:.2f} | {base_seconds / seconds:.2f}× |"
                )
    table = "\n".join(lines)
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
