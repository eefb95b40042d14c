"""`argen activations`: a generator's activations at named hook points, captured to sharded safetensors."""

from __future__ import annotations

import argparse

NAME = "activations"
HELP = "capture a generator's activations at named hook points (for sparse autoencoders)"
DESCRIPTION = (
    "Run --num sequences (training images or the model's own samples) through the model teacher-forced and store the "
    "activations at each --hook, with the class, step and grid cell of every position. Rerun to resume."
)
ORDER = 110


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory (argen train --out)")
    parser.add_argument("--hook", action="append", default=[], help="hook point, e.g. blocks.1.resid_post (repeat)")
    parser.add_argument("--list-hooks", action="store_true", help="print the model's hook points and stop")
    parser.add_argument("--num", type=int, default=2000, help="sequences to capture")
    parser.add_argument("--out", help="activations directory to write")
    parser.add_argument("--source", choices=("train", "samples"), default="train", help="training images or samples")
    parser.add_argument("--data", help="dataset of the training images (default: the one the model was trained on)")
    parser.add_argument("--data-dir", help="where to look for the dataset's files first")
    parser.add_argument("--seed", type=int, default=0, help="which training images / which samples")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-megabytes", type=int, default=64, help="memory bound: the size of one shard")
    parser.add_argument("--no-progress", action="store_true")


def run(arguments: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from argen.errors import ArgenError
    from argen.interpret.activations import capture_activations, hook_points
    from argen.interpret.sources import sampled_sequences, training_sequences
    from argen.pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(arguments.model)
    if arguments.list_hooks:
        for name, point in hook_points(pipeline.model).items():
            print(f"{name}\t{point.module} ({point.site})")
        return
    if not arguments.hook or not arguments.out:
        raise ArgenError("give --hook NAME (see --list-hooks) and --out DIR")
    if arguments.num < 1:
        raise ArgenError(f"--num must be positive, got {arguments.num}")
    progress = not arguments.no_progress
    if arguments.source == "train":
        extra = json.loads((Path(arguments.model) / "generator" / "config.json").read_text()).get("extra", {})
        data = arguments.data or extra.get("data")
        if not data:
            raise ArgenError("the model does not say which data it was trained on: pass --data")
        ids, labels = training_sequences(
            pipeline, data, arguments.num, seed=arguments.seed, data_dir=arguments.data_dir, progress=progress
        )
        source = {"model": str(arguments.model), "source": "train", "data": data, "seed": arguments.seed}
    else:
        ids, labels = sampled_sequences(pipeline, arguments.num, seed=arguments.seed, batch_size=arguments.batch_size)
        source = {"model": str(arguments.model), "source": "samples", "seed": arguments.seed}
    out = capture_activations(
        pipeline.model, pipeline.order, pipeline.tokenizer, ids, labels, arguments.hook, arguments.out,
        batch_size=arguments.batch_size, shard_bytes=arguments.shard_megabytes << 20, source=source,
        progress=progress,
    )  # fmt: skip
    print(f"captured {arguments.num} sequences at {', '.join(arguments.hook)}: {out}")
