"""The micro-benchmarks behind the sampling loop's choices, on this machine, at the shipped models' sizes.

    OMP_NUM_THREADS=1 python bench/kernels.py            # about a minute; run it on an otherwise idle machine

- top-k draws over V = 1024 logits: the previous draw (a `torch.topk` search, then an inverse-CDF draw among the k)
  against argen's rejection draw (`argen.samplers.logits.draw_top_k`), on rows like a trained model's (most mass on
  a few codes), fresh rows at every call; and the search alone on the same rows at every call, which shows why a
  benchmark must not reuse rows: the CPU's branch predictor learns topk's selection.
- the shipped tokenizer's decoder at batch 1 and 64, conv weights in the default layout and channels-last (what
  `Pipeline` does on a CPU), with PyTorch's choice of convolution kernels and with argen's (`argen.onednn.Conv2d`).
- the AdaLN modulation of one block's input, ``rms_norm(x) * scale + shift`` against one ``addcmul``.
- the transformer's products through MKL (``F.linear``) and oneDNN (`argen.onednn`), which sets its threshold.

Medians of interleaved repeats, microseconds or milliseconds per call.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(functions: dict, *, calls: int, repeats: int = 5) -> dict[str, float]:
    """Median seconds per call of each function, the functions interleaved repeat by repeat."""
    results: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function()  # warm-up
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            for _ in range(calls):
                function()
            results[name].append((time.perf_counter() - started) / calls)
    return {name: statistics.median(values) for name, values in results.items()}


def peaked_logits(rows: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, V) logits with most of the mass on a handful of codes, as a trained model's."""
    logits = 3.0 * torch.randn(rows, vocab, generator=generator)
    top = torch.randint(vocab, (rows, 5), generator=generator)
    return logits.scatter_add(1, top, torch.full((rows, 5), 8.0))


def search_then_draw(logits: torch.Tensor, top_k: int, generator: torch.Generator) -> torch.Tensor:
    """The draw argen made before the rejection draw: a top-k search, then an inverse-CDF draw among the k."""
    from argen.samplers.logits import draw_by_cdf

    values, indices = torch.topk(logits, top_k + 1, dim=-1)
    bool((values[..., top_k] == values[..., top_k - 1]).any())  # its tie check
    choice = draw_by_cdf(values[..., :top_k].softmax(dim=-1), generator)
    return indices.gather(-1, choice[..., None]).squeeze(-1)


def top_k_draws(vocab: int = 1024, top_k: int = 100) -> list[str]:
    from argen.samplers.logits import draw_top_k

    generator = torch.Generator().manual_seed(0)
    pool = [peaked_logits(49, vocab, generator) for _ in range(64)]  # fresh rows at every call, from a pool
    lines = [
        "| rows | top-k search + draw among k µs | rejection draw µs | the search alone, same rows every call µs |",
        "|---|---|---|---|",
    ]
    for rows in (1, 9, 25, 49):
        cycle = iter(range(10**9))

        def fresh(rows: int = rows, cycle=cycle) -> torch.Tensor:
            return pool[next(cycle) % len(pool)][:rows]

        same = pool[0][:rows].clone()
        seconds = timed(
            {
                "search": lambda fresh=fresh: search_then_draw(fresh(), top_k, generator),
                "rejection": lambda fresh=fresh: draw_top_k(fresh(), top_k, generator),
                "same rows": lambda same=same: torch.topk(same, top_k + 1, dim=-1),
            },
            calls=200,
        )
        cells = " | ".join(f"{1e6 * seconds[name]:.1f}" for name in ("search", "rejection", "same rows"))
        lines.append(f"| {rows} | {cells} |")
    return lines


def decoder_layouts(model: str) -> list[str]:
    from argen import onednn
    from argen.pipeline import Pipeline

    tokenizer = Pipeline.from_pretrained(model).tokenizer  # channels-last already (a CPU pipeline)
    default = copy.deepcopy(tokenizer).to(memory_format=torch.contiguous_format)
    threshold = onednn.MIN_CONVOLUTION_PIXELS

    def pytorch_choice(decoder, latent: torch.Tensor) -> None:  # every convolution as PyTorch picks it
        onednn.MIN_CONVOLUTION_PIXELS = 10**12
        try:
            decoder.decode_latent(latent)
        finally:
            onednn.MIN_CONVOLUTION_PIXELS = threshold

    lines = [
        "| batch | default layout ms | channels-last ms | channels-last, argen's convolutions (argen.onednn) ms |",
        "|---|---|---|---|",
    ]
    for batch in (1, 64):
        latent = torch.randn(batch, tokenizer.config.latent_dim, *tokenizer.grid_shapes[-1])
        seconds = timed(
            {
                "default": lambda latent=latent: pytorch_choice(default, latent),
                "pytorch": lambda latent=latent: pytorch_choice(tokenizer, latent),
                "argen": lambda latent=latent: tokenizer.decode_latent(latent),
            },
            calls=100 if batch == 1 else 5,
        )
        cells = " | ".join(f"{1e3 * seconds[name]:.3f}" for name in ("default", "pytorch", "argen"))
        lines.append(f"| {batch} | {cells} |")
    return lines


def modulation(width: int = 112) -> list[str]:
    lines = ["| rows × positions | rms_norm · scale + shift µs | addcmul µs |", "|---|---|---|"]
    for rows, length in ((2, 49), (128, 49)):
        x = torch.randn(rows, length, width)
        scale, shift = torch.randn(rows, 1, width), torch.randn(rows, 1, width)
        seconds = timed(
            {
                "two": lambda x=x, scale=scale, shift=shift: F.rms_norm(x, (width,), eps=1e-6) * scale + shift,
                "addcmul": lambda x=x, scale=scale, shift=shift: torch.addcmul(
                    shift, F.rms_norm(x, (width,), eps=1e-6), scale
                ),
            },
            calls=500 if rows == 2 else 20,
        )
        lines.append(f"| {rows} × {length} | {1e6 * seconds['two']:.1f} | {1e6 * seconds['addcmul']:.1f} |")
    return lines


def products(width: int = 112, hidden: int = 304, vocab: int = 1024) -> list[str]:
    """One forward's products of the shipped 1m transformer (3 blocks' qkv, proj, gate_up, down and the output layer)
    through MKL (``F.linear``) and oneDNN (`argen.onednn`), each with its own weights as in a real forward (a
    micro-benchmark that repeats one product keeps its weights in cache and flatters the library with the larger
    fixed cost), at the row counts of next-scale sampling at batch 1 with guidance; and one training-size product."""
    from argen import onednn

    if not onednn.enabled:
        return ["(no oneDNN products in this torch build or on this CPU)"]
    shapes = [(3 * width, width), (width, width), (2 * hidden, width), (width, hidden)] * 3 + [(vocab, width)]
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(*shape, generator=generator) for shape in shapes]
    lines = ["| rows | MKL µs | oneDNN µs | MKL / oneDNN |", "|---|---|---|---|"]
    for rows in (2, 8, 18, 32, 50, 98, 6272):
        inputs = [torch.randn(rows if index < 12 else max(1, rows // 2), weight.shape[1]) for index, weight in
                  enumerate(weights)]  # fmt: skip

        def forward(product, inputs=inputs) -> None:
            for x, weight in zip(inputs, weights, strict=True):
                product(x, weight, None)

        seconds = timed(
            {
                "mkl": lambda forward=forward: forward(F.linear),
                "onednn": lambda forward=forward: forward(onednn._product),
            },
            calls=200 if rows < 1000 else 2,
        )
        label = f"{rows} (training: 128 images × 49)" if rows > 1000 else str(rows)
        lines.append(
            f"| {label} | {1e6 * seconds['mkl']:.0f} | {1e6 * seconds['onednn']:.0f} | "
            f"{seconds['mkl'] / seconds['onednn']:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints/fashion-mnist/scale"), help="whose tokenizer")
    parser.add_argument("--threads", type=int, default=1)
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    with torch.inference_mode():
        for title, lines in (
            ("Top-k draws over 1024 logits (per call)", top_k_draws()),
            ("The shipped tokenizer's decoder (per call)", decoder_layouts(arguments.model)),
            ("AdaLN modulation of a block input, width 112 (per call)", modulation()),
            ("The 13 products of one forward of the shipped 1m transformer (per forward)", products()),
        ):
            print(f"\n{title}, threads {arguments.threads}:\n")
            print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
