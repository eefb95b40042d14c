"""Where one `Pipeline.__call__` spends its time: wall-clock timers around its parts, at any batch size.

    python bench/sampling_breakdown.py                                   # the shipped next-scale model, VAR's setting
    python bench/sampling_breakdown.py --model checkpoints/fashion-mnist/raster --cfg-scale 2 --top-k 0

The parts (milliseconds per image, mean over ``--images`` images after a warm-up; nested parts are not counted twice):

- transformer blocks and heads (`Transformer._body`);
- the rest of the transformer call (inputs, position embeddings, class context, cache bookkeeping);
- step inputs (`argen.samplers.base.feed` outside the transformer: the running latent, φ, the downsampling);
- draws (`argen.samplers.logits.sample`: softmax, top-k, the inverse-CDF draw);
- decode (`tokenizer.decode_latent` / `decode`);
- the rest of the pipeline call (request checks, scatter, images out).

Timers cost a few microseconds per call, so the total is a little above an untimed call's; read the shares, and
compare speeds with bench/sampling.py and bench/var_reference.py, which time untouched calls.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = {
    "body": "transformer blocks and heads",
    "forward": "rest of the transformer call",
    "feed": "step inputs",
    "sample": "draws (softmax, top-k, inverse CDF)",
    "decode": "decode",
    "pipeline": "rest of the pipeline call",
}
# Which part each timed function's time is charged to after its timed children are taken out.
CHILDREN = {"pipeline": ("feed", "sample", "decode"), "feed": ("forward",), "forward": ("body",), "body": ()}


def install_timers(pipeline) -> collections.Counter:
    """Wrap the functions of `PARTS` with wall-clock timers; returns the counter of inclusive seconds."""
    import argen.samplers.base as base
    from argen.model import Transformer

    seconds: collections.Counter = collections.Counter()

    def timed(owner, name: str, part: str) -> None:
        function = getattr(owner, name)

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[part] += time.perf_counter() - started

        setattr(owner, name, wrapper)

    timed(Transformer, "_body", "body")
    timed(Transformer, "forward", "forward")
    timed(base, "feed", "feed")  # decode_step calls base's own names: feed, and sample (imported from logits)
    timed(base, "sample", "sample")
    tokenizer = type(pipeline.tokenizer)
    timed(tokenizer, "decode_latent", "decode")  # neither calls the other
    timed(tokenizer, "decode", "decode")
    timed(type(pipeline), "__call__", "pipeline")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints/fashion-mnist/scale"), help="argen model dir")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--images", type=int, default=300, help="images timed (after a warm-up)")
    parser.add_argument("--cfg-scale", type=float, default=2.5, help="default: VAR's cfg 1.5 (bench/var_reference)")
    parser.add_argument("--cfg-schedule", default="linear")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    from argen.pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(arguments.model)
    classes = max(pipeline.model.config.num_classes, 1)
    settings = dict(cfg_scale=arguments.cfg_scale, cfg_schedule=arguments.cfg_schedule, top_k=arguments.top_k)
    batches = max(1, arguments.images // arguments.batch_size)

    def run(seed: int) -> None:
        labels = [(seed + index) % classes for index in range(arguments.batch_size)]
        if pipeline.model.config.num_classes:
            pipeline(labels, seed=seed, **settings)
        else:
            pipeline(num_images=arguments.batch_size, seed=seed, **{**settings, "cfg_scale": 1.0})

    for seed in range(min(20, batches)):  # warm-up, untimed
        run(seed)
    seconds = install_timers(pipeline)
    for seed in range(batches):
        run(seed)
    images = batches * arguments.batch_size
    exclusive = {
        part: seconds[part] - sum(seconds[child] for child in CHILDREN.get(part, ())) for part in PARTS
    }  # fmt: skip
    total = seconds["pipeline"]
    print(f"{arguments.model}: batch {arguments.batch_size}, {images} images, {settings}, threads {arguments.threads}")
    print("| part | ms / image | share |")
    print("|---|---|---|")
    for part, label in PARTS.items():
        print(f"| {label} | {exclusive[part] / images * 1e3:.3f} | {exclusive[part] / total:.0%} |")
    print(f"| total (timed) | {total / images * 1e3:.3f} | 100% |")


if __name__ == "__main__":
    main()
