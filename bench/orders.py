"""Speed and memory of the four generation orders at one transformer size, measured side by side in one run.

    python bench/orders.py --preset 3m --threads 1        # the table in bench/results/orders-3m.md
    python bench/orders.py --quick                        # smoke test: tiny preset, 1 repeat, batch 8, 1 thread

Speed does not depend on trained weights, so every order gets an untrained tokenizer of its kind (default
`TokenizerConfig`: vq for raster and neighbor, multiscale for scale, frequency for frequency) and an untrained
transformer of the same preset, built from ``order.model_settings(tokenizer)``. What is measured, per order:

- training: one full step (``order.train_inputs`` under no_grad, forward, ``order.logits``, cross-entropy,
  backward, AdamW step) on random ids and labels at ``--batch-size``; tokens/s (sequence positions fed), images/s,
  the share of the step spent building the inputs (compose + resize for scale and frequency), the analytic FLOPs
  per image (2·MACs per matmul forward, ×3 for forward + backward, attention's QKᵀ and AV over all L×L pairs because
  SDPA with an explicit mask computes every pair, AdaLN modulation once per image) and FLOP utilisation: achieved
  FLOP/s over the fp32 peak, the best median GFLOP/s of ``torch.mm`` on 1024² and 2048² matrices timed in this
  run at the same thread count.
- sampling: `argen.samplers.generate` with the KV cache at batch 1 (seconds per image, averaged over a few images
  one at a time, since one image takes tens of milliseconds), at ``--batch-size`` with cfg_scale 1, and at
  ``--batch-size`` with cfg_scale 2 (which doubles the rows); model calls per image (the order's steps), sequence
  positions per image, and raster's batch-1 latency divided by each order's.
- peak memory: ``ru_maxrss`` of the process minus a baseline taken right after imports and model construction;
  for training after all steps, for sampling right after the first generation at ``--batch-size`` (cfg 1) and, as
  a second column, after everything including cfg 2.

How: every order gets two fresh worker processes, one training and one sampling, so that neither the orders nor
training and sampling share a high-water mark. They start from a multiprocessing forkserver that has imported torch
and argen and nothing else (spawn where there is no forkserver), because importing torch in eight processes costs
more than the quick run's measurements. All workers build and warm up once, then wait; the parent runs
``--repeats`` rounds, and in each round asks every worker in turn (the order rotated each round) for one measurement
and times the matmul peak itself. Only one process computes at a time, and a load that drifts during the run slows
every order alike, so the orders compare fairly within one table. Numbers are medians over the rounds; the raster
ratio is the median of the per-round ratios. Every process calls ``torch.set_num_threads(--threads)``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shlex
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from provenance import describe_run, machine_record, start_clock, write_results

from argen.model import Transformer, preset_config
from argen.orders import ORDERS, build_order, default_tokenizers
from argen.samplers import generate
from argen.tokenizers import TokenizerConfig, build_tokenizer

ORDER_TOKENIZERS = default_tokenizers()  # each order's tokenizer kind, from the order's own file
NUM_CLASSES = 10
MATMUL_SIZES = (1024, 2048)
ROOT = Path(__file__).resolve().parent.parent


# -- building and small helpers ---------------------------------------------------------------------------------------


def build(order_name: str, preset: str) -> tuple[Any, Any, Transformer]:
    """Untrained tokenizer of the order's kind, the order, and an untrained transformer of ``preset``."""
    tokenizer = build_tokenizer(TokenizerConfig(kind=ORDER_TOKENIZERS[order_name])).eval()
    tokenizer.requires_grad_(False)
    order = build_order(order_name, tokenizer)
    model = Transformer(preset_config(preset, num_classes=NUM_CLASSES, **order.model_settings(tokenizer)))
    return tokenizer, order, model


def random_batch(tokenizer: Any, batch_size: int, generator: torch.Generator) -> tuple[list, torch.Tensor]:
    """Random id grids (one (B, h, w) per tokenizer grid) and labels (B,)."""
    size = tokenizer.codebook_size
    ids = [torch.randint(size, (batch_size, h, w), generator=generator) for h, w in tokenizer.grid_shapes]
    return ids, torch.randint(NUM_CLASSES, (batch_size,), generator=generator)


def peak_rss_mib() -> float:
    """The process's resident-memory high-water mark in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# -- one function per measurement -------------------------------------------------------------------------------------


def flops_per_image(model: Transformer, length: int) -> dict[str, float]:
    """Analytic matmul FLOPs of one image of ``length`` sequence positions: forward, and forward + backward."""
    config = model.config
    width, blocks = config.width, model.num_layers  # num_layers counts NAR's extra head block
    per_token = blocks * (4 * width * width + 3 * width * config.hidden)  # qkv + proj, gate_up (2·hidden) + down
    per_token += config.num_heads_out * width * config.vocab_size + config.feature_dim * width  # heads, feature_proj
    # QKᵀ and AV summed over heads: L·L·D MACs each. The block-causal mask does not skip pairs in SDPA.
    attention = blocks * 2 * length * length * width
    # AdaLN maps the class to scales, shifts and gates once per image, not per position.
    modulation = (blocks * 6 + config.num_heads_out * 2) * width * width if config.adaln else 0
    forward = 2.0 * (per_token * length + attention + modulation)
    return {"forward": forward, "train": 3.0 * forward}


def time_matmul(size: int) -> float:
    """GFLOP/s of an fp32 product of two size×size matrices (a few calls, so one timing is ~0.1 s or more): the faster
    of ``torch.mm`` and oneDNN's product where argen uses it (`argen.onednn`; on AMD CPUs MKL takes its AVX2 path,
    so ``torch.mm`` alone would understate what the machine can do by half)."""
    from argen import onednn

    left, right = torch.randn(size, size), torch.randn(size, size)
    products = [lambda: torch.mm(left, right)]
    if onednn.enabled:
        products.append(lambda: onednn._product(left, right, None))
    calls = max(1, (2048 // size) ** 3)
    best = 0.0
    for product in products:
        start = time.perf_counter()
        for _ in range(calls):
            product()
        best = max(best, calls * 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def time_training_step(
    model: Transformer, optimizer: torch.optim.Optimizer, order: Any, tokenizer: Any, layout: Any, batch: tuple
) -> dict[str, float]:
    """Seconds of one training step on ``batch`` (ids, labels), split into building the inputs and the model step."""
    ids, labels = batch
    start = time.perf_counter()
    with torch.no_grad():
        inputs, targets = order.train_inputs(ids, tokenizer)
    built = time.perf_counter()
    logits = order.logits(model(inputs, labels, layout=layout), layout)  # (B, L, V)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    end = time.perf_counter()
    return {"inputs_seconds": built - start, "model_seconds": end - built, "step_seconds": end - start}


def time_sampling(model: Transformer, order: Any, tokenizer: Any, *, images: int, cfg_scale: float, seed: int) -> dict:
    """Seconds per image of `generate` with the KV cache: ``images`` at once, or one at a time when ``images`` < 0."""
    generator = torch.Generator().manual_seed(seed)
    count, one_at_a_time = abs(images), images < 0
    labels = torch.randint(NUM_CLASSES, (count,), generator=generator)
    start = time.perf_counter()
    calls = 0
    for chunk in labels.split(1 if one_at_a_time else count):
        output = generate(model, order, tokenizer, labels=chunk, cfg_scale=cfg_scale, generator=generator)
        calls = output.forward_passes
    seconds = time.perf_counter() - start
    return {"seconds_per_image": seconds / count, "forward_passes": calls}


# -- worker processes -------------------------------------------------------------------------------------------------


def training_worker(connection: Any, order_name: str, settings: dict) -> None:
    """Build, warm up, then time one training step per request; finally report the peak memory."""
    torch.set_num_threads(settings["threads"])
    torch.manual_seed(settings["seed"])
    tokenizer, order, model = build(order_name, settings["preset"])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=False)
    layout = order.layout(tokenizer.grid_shapes)
    baseline = peak_rss_mib()
    generator = torch.Generator().manual_seed(settings["seed"])
    warm_up = random_batch(tokenizer, settings["batch"], generator)
    time_training_step(model, optimizer, order, tokenizer, layout, warm_up)
    connection.send(
        {
            "tokenizer": tokenizer.config.kind,
            "parameters": sum(parameter.numel() for parameter in model.parameters()),
            "length": layout.length,
            "steps": layout.num_steps,
            "flops": flops_per_image(model, layout.length),
        }
    )
    while connection.recv():
        batch = random_batch(tokenizer, settings["batch"], generator)
        connection.send(time_training_step(model, optimizer, order, tokenizer, layout, batch))
    connection.send({"peak_mib": peak_rss_mib() - baseline})


def sampling_worker(connection: Any, order_name: str, settings: dict) -> None:
    """Build, warm up, then time the three sampling settings per request; finally report the peak memory."""
    torch.set_num_threads(settings["threads"])
    torch.manual_seed(settings["seed"])
    tokenizer, order, model = build(order_name, settings["preset"])
    model.eval()
    baseline = peak_rss_mib()
    batch, latency_images = settings["batch"], settings["latency_images"]
    runs = {
        "batch": {"images": batch, "cfg_scale": 1.0},
        "single": {"images": -latency_images, "cfg_scale": 1.0},
        "batch_cfg": {"images": batch, "cfg_scale": 2.0},
    }
    # The batch at cfg 1 runs first so that the high-water mark after it is that setting's peak alone.
    time_sampling(model, order, tokenizer, **runs["batch"], seed=settings["seed"])
    peak_batch = peak_rss_mib() - baseline
    for name in ("single", "batch_cfg"):
        time_sampling(model, order, tokenizer, **runs[name], seed=settings["seed"])
    connection.send({"length": order.layout(tokenizer.grid_shapes).length})
    round_index = 0
    while connection.recv():
        round_index += 1
        seed = settings["seed"] + round_index
        connection.send({name: time_sampling(model, order, tokenizer, **run, seed=seed) for name, run in runs.items()})
    connection.send({"peak_mib": peak_batch, "peak_cfg_mib": peak_rss_mib() - baseline})


def run_worker(target: Any, connection: Any, order_name: str, settings: dict) -> None:
    """Run a worker; on failure send the traceback so that the parent can stop with it instead of hanging."""
    try:
        target(connection, order_name, settings)
    except BaseException:
        connection.send({"error": traceback.format_exc()})
        raise


def receive(connection: Any, what: str) -> dict:
    message = connection.recv()
    if "error" in message:
        raise SystemExit(f"the {what} worker failed:\n{message['error']}")
    return message


# -- the run ----------------------------------------------------------------------------------------------------------


def measure_all(orders: list[str], settings: dict) -> dict:
    """Start two workers per order, run the interleaved rounds, collect raw timings and peaks."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "argen.orders", "argen.samplers", "argen.tokenizers"])
    else:
        context = multiprocessing.get_context("spawn")
    workers: dict[tuple[str, str], tuple[Any, Any]] = {}
    for order_name in orders:
        for role, target in (("train", training_worker), ("sample", sampling_worker)):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=run_worker, args=(target, child_end, order_name, settings), daemon=True)
            process.start()
            workers[(order_name, role)] = (parent_end, process)
    # Each worker sends its static facts once warmed up; waiting for all of them in turn means the warm-ups overlap
    # only each other, never a timed measurement.
    info = {key: receive(connection, f"{key[1]} {key[0]}") for key, (connection, _) in workers.items()}
    raw: dict[str, Any] = {f"{order_name}/{role}": [] for order_name, role in workers}
    matmul: dict[int, list[float]] = {size: [] for size in MATMUL_SIZES}
    for size in MATMUL_SIZES:
        time_matmul(size)  # warm-up
    for round_index in range(settings["repeats"]):
        shift = round_index % len(orders)
        for order_name in orders[shift:] + orders[:shift]:
            for role in ("train", "sample"):
                connection, _ = workers[(order_name, role)]
                connection.send(True)
                raw[f"{order_name}/{role}"].append(receive(connection, f"{role} {order_name}"))
        for size in MATMUL_SIZES:
            matmul[size].append(time_matmul(size))
        print(f"round {round_index + 1}/{settings['repeats']} done", file=sys.stderr, flush=True)
    peaks = {}
    for key, (connection, process) in workers.items():
        connection.send(False)
        peaks[f"{key[0]}/{key[1]}"] = receive(connection, f"{key[1]} {key[0]}")
        process.join()
    return {"info": {f"{key[0]}/{key[1]}": value for key, value in info.items()}, "raw": raw, "peaks": peaks,
            "matmul_gflops": {str(size): values for size, values in matmul.items()}}  # fmt: skip


def summarise(orders: list[str], measured: dict, settings: dict) -> dict:
    """Medians and derived numbers per order from the raw per-round measurements."""
    matmul = {size: median(values) for size, values in measured["matmul_gflops"].items()}
    peak_size = max(matmul, key=matmul.get)
    peak_gflops = matmul[peak_size]
    batch = settings["batch"]
    rows = {}
    for order_name in orders:
        info, training = measured["info"][f"{order_name}/train"], measured["raw"][f"{order_name}/train"]
        sampling = measured["raw"][f"{order_name}/sample"]
        step = median([record["step_seconds"] for record in training])
        gflops = info["flops"]["train"] * batch / step / 1e9
        single = median([record["single"]["seconds_per_image"] for record in sampling])
        batched = median([record["batch"]["seconds_per_image"] for record in sampling])
        guided = median([record["batch_cfg"]["seconds_per_image"] for record in sampling])
        raster_ratio = median(
            [
                raster["single"]["seconds_per_image"] / record["single"]["seconds_per_image"]
                for raster, record in zip(measured["raw"]["raster/sample"], sampling)
            ]
        ) if "raster" in orders else None  # fmt: skip
        rows[order_name] = {
            "tokenizer": info["tokenizer"],
            "parameters": info["parameters"],
            "length": info["length"],
            "steps": info["steps"],
            "forward_passes_per_image": sampling[0]["single"]["forward_passes"],
            "train_flops_per_image": info["flops"]["train"],
            "forward_flops_per_image": info["flops"]["forward"],
            "train_step_seconds": step,
            "train_tokens_per_second": batch * info["length"] / step,
            "train_images_per_second": batch / step,
            "train_gflops_per_second": gflops,
            "flop_utilisation": gflops / peak_gflops,
            "inputs_share": median([record["inputs_seconds"] / record["step_seconds"] for record in training]),
            "train_peak_mib": measured["peaks"][f"{order_name}/train"]["peak_mib"],
            "single_seconds_per_image": single,
            "single_images_per_second": 1 / single,
            "raster_latency_ratio": raster_ratio,
            "batch_seconds_per_image": batched,
            "batch_images_per_second": 1 / batched,
            "batch_cfg_seconds_per_image": guided,
            "batch_cfg_images_per_second": 1 / guided,
            "sample_peak_mib": measured["peaks"][f"{order_name}/sample"]["peak_mib"],
            "sample_cfg_peak_mib": measured["peaks"][f"{order_name}/sample"]["peak_cfg_mib"],
        }
    return {"matmul_peak_gflops": peak_gflops, "matmul_peak_size": int(peak_size), "matmul_medians": matmul,
            "orders": rows}  # fmt: skip


def render(summary: dict, settings: dict, machine: dict) -> str:
    """The markdown: header, reproduce command, training table, sampling table, legend."""
    batch, rows = settings["batch"], summary["orders"]
    lines = [
        f"# Generation orders at equal model size: preset {settings['preset']}",
        "",
        f"Reproduce: `{settings['command']}`",
        "",
        f"Machine: {machine['cpu_count']} CPUs (os.cpu_count), torch {machine['torch']}, {settings['threads']} "
        f"thread(s), Python {machine['python']}; load average {machine['load_before']:.2f} before, "
        f"{machine['load_after']:.2f} after; fp32 matmul peak {summary['matmul_peak_gflops']:.1f} GFLOP/s "
        f"({summary['matmul_peak_size']}², median); {settings['repeats']} interleaved rounds, medians; "
        f"{describe_run(machine)}",
        "",
        f"Training, batch {batch}:",
        "",
        "| order | tokenizer | params | tokens/img | GFLOP/img | step s | tokens/s | img/s | GFLOP/s | util "
        "| inputs share | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['tokenizer']} | {row['parameters'] / 1e6:.2f}M | {row['length']} | "
            f"{row['train_flops_per_image'] / 1e9:.3f} | {row['train_step_seconds']:.3f} | "
            f"{row['train_tokens_per_second']:,.0f} | {row['train_images_per_second']:.1f} | "
            f"{row['train_gflops_per_second']:.1f} | {row['flop_utilisation']:.0%} | {row['inputs_share']:.1%} | "
            f"{row['train_peak_mib']:.0f} |"
        )
    lines += [
        "",
        f"Sampling (KV cache), batch 1 (mean of {settings['latency_images']} images one at a time) and batch {batch}:",
        "",
        f"| order | model calls/img | tokens/img | b1 s/img | b1 img/s | raster÷order b1 | b{batch} img/s "
        f"| b{batch} ms/img | b{batch} cfg2 img/s | peak MiB b{batch} | peak MiB b{batch} cfg2 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        ratio = "–" if row["raster_latency_ratio"] is None else f"{row['raster_latency_ratio']:.2f}×"
        lines.append(
            f"| {name} | {row['forward_passes_per_image']} | {row['length']} | "
            f"{row['single_seconds_per_image']:.4f} | {row['single_images_per_second']:.1f} | {ratio} | "
            f"{row['batch_images_per_second']:.1f} | {row['batch_seconds_per_image'] * 1e3:.2f} | "
            f"{row['batch_cfg_images_per_second']:.1f} | {row['sample_peak_mib']:.0f} | "
            f"{row['sample_cfg_peak_mib']:.0f} |"
        )
    lines += [
        "",
        "tokens/img: sequence positions fed per image (L). GFLOP/img: analytic matmul FLOPs of forward + backward. "
        "step s: one full training step (train_inputs, forward, cross-entropy, backward, AdamW). util: achieved "
        "GFLOP/s ÷ the matmul peak. inputs share: time in `order.train_inputs` ÷ step time. model calls/img: "
        "sequential forward passes to generate an image (the order's steps). raster÷order b1: raster's batch-1 "
        "latency over the order's (above 1: faster than raster). cfg2 doubles the rows. peak MiB: ru_maxrss above "
        "the worker's baseline after imports and model construction, each order in its own processes.",
    ]
    return "\n".join(lines) + "\n"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="3m", help="transformer preset for every order (tiny, 1m, 3m, 10m)")
    parser.add_argument("--orders", default=",".join(ORDERS))
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the tables quote medians")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch and the large sampling batch")
    parser.add_argument("--latency-images", type=int, default=8, help="images generated one at a time per round")
    parser.add_argument("--threads", type=int, help="torch threads in every process (default: torch's current)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="markdown path (default bench/results/orders-PRESET.md)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny preset, 1 repeat, batch 8, 1 thread")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.preset, arguments.repeats, arguments.batch_size, arguments.latency_images = "tiny", 1, 8, 2
    if arguments.threads is None:
        # A smoke test on a busy machine: with more threads than free cores every op waits at its thread barrier
        # for a descheduled thread, and the tiny run takes minutes instead of seconds.
        arguments.threads = 1 if arguments.quick else torch.get_num_threads()
    if min(arguments.repeats, arguments.batch_size, arguments.latency_images, arguments.threads) < 1:
        parser.error("--repeats, --batch-size, --latency-images and --threads must be at least 1")
    unknown = [name for name in arguments.orders.split(",") if name not in ORDER_TOKENIZERS]
    if unknown:
        parser.error(f"unknown order(s) {', '.join(unknown)}: choose from {', '.join(ORDER_TOKENIZERS)}")
    if arguments.out is None:
        arguments.out = str(ROOT / "bench" / "results" / f"orders-{arguments.preset}.md")
    return arguments


def main() -> None:
    arguments = parse_arguments()
    orders = arguments.orders.split(",")
    torch.set_num_threads(arguments.threads)
    # The command with every setting spelled out, so that it reproduces the table even if a default changes.
    command = [
        "python", "bench/orders.py", "--preset", arguments.preset, "--orders", arguments.orders,
        "--repeats", str(arguments.repeats), "--batch-size", str(arguments.batch_size),
        "--latency-images", str(arguments.latency_images), "--threads", str(arguments.threads),
        "--seed", str(arguments.seed),
    ]  # fmt: skip
    settings = {
        "preset": arguments.preset,
        "repeats": arguments.repeats,
        "batch": arguments.batch_size,
        "latency_images": arguments.latency_images,
        "threads": arguments.threads,
        "seed": arguments.seed,
        "command": shlex.join(command),
    }
    clock = start_clock()
    measured = measure_all(orders, settings)
    machine = machine_record(**clock)
    summary = summarise(orders, measured, settings)
    markdown = render(summary, settings, machine)
    document = {"settings": settings, "machine": machine, "summary": summary, "measured": measured}
    out = write_results(arguments.out, markdown, document)
    print(markdown)
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
