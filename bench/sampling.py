"""Sampling speed of every order × sampler on the shipped models, eager and compiled, and the training step.

    python bench/sampling.py                      # the tables of docs/speed.md (tens of minutes on an idle 2-core CPU)
    python bench/sampling.py --quick              # smoke test: raster and scale, batch 1 and 4, eager, 2 repeats

What is measured, per order (a shipped model directory, ``--models/ORDER``) × sampler (every registered one the
order supports; collaborative decoding uses ``--models/refiners/ORDER`` as its refiner and hands over at half the
steps) × mode (eager, compiled: `argen.Pipeline` with ``compile=True``) × guidance (cfg_scale 1, and ``--cfg``):

- batch 1: milliseconds per image, `Pipeline.__call__` on one label (decode included), the median of
  ``--repeats`` runs; runs of all configurations are interleaved round by round, so a load that drifts during the
  run slows every configuration alike. The ratio column is raster's plain-decoding latency (same mode and guidance)
  over the row's.
- each of ``--batch-sizes`` above 1: images per second, median of ``--batch-repeats`` interleaved runs.
- model calls per image, and the peak memory of one run at the largest batch: CUDA's max_memory_allocated on a
  GPU; on a CPU the peak resident memory above the level before the run, sampled every millisecond.
- compile seconds: the warm-up of a compiled configuration (every call length it meets at every batch size).

The sampling settings are each model's recommended ones (``sampling.json``), cfg_scale overridden as above.

Training (``--train-preset``, default 3m, random ids at ``--train-batch``, untrained tokenizer of the order's kind as
in bench/orders.py): images/s of one full step (inputs, forward, loss, backward, AdamW), eager and compiled, the
analytic GFLOP/s (bench/orders.py's count) and their share of the fp32 matmul peak measured here (``torch.mm``
on 1024² and 2048² matrices, best median) at the same thread count.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from orders import build, flops_per_image, random_batch, time_matmul, time_training_step  # noqa: E402

from argen.orders import ORDERS  # noqa: E402
from argen.pipeline import Pipeline  # noqa: E402
from argen.samplers import SAMPLERS  # noqa: E402


class _MallocInfo(ctypes.Structure):
    """glibc's ``struct mallinfo2``."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]  # fmt: skip


def _malloc_info():
    """glibc's ``mallinfo2`` (2.33+), or None elsewhere."""
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallocInfo
    return function


class PeakMemory:
    """Peak memory of the code inside ``with``, in MiB: CUDA's allocator peak, or on a CPU the bytes malloc has handed
    out and not taken back (glibc's ``mallinfo2``) above their level at entry, sampled every millisecond by a thread.
    Not the resident set: with freed memory kept in the process (`argen.allocator`) that would not move. Where there
    is no mallinfo2, the resident set (/proc/self/statm; 0 where there is none)."""

    _mallinfo = _malloc_info()

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._running = device, 0.0, False

    @classmethod
    def resident(cls) -> float:
        if cls._mallinfo is not None:
            info = cls._mallinfo()
            return (info.uordblks + info.hblkhd) / 2**20
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return 0.0
        return pages * 4096 / 2**20

    def _sample(self, base: float) -> None:
        while self._running:
            self.peak = max(self.peak, self.resident() - base)
            time.sleep(0.001)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._running = True
            self._thread = threading.Thread(target=self._sample, args=(self.resident(),), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._running = False
            self._thread.join()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Configuration:
    """One (order, sampler, mode, cfg) to time: a pipeline and the keywords of its calls."""

    def __init__(self, pipeline: Pipeline, *, order: str, sampler: str, mode: str, cfg: float, options: dict):
        self.pipeline, self.order, self.sampler, self.mode, self.cfg = pipeline, order, sampler, mode, cfg
        self.keywords = {**pipeline.sampling_settings(cfg_scale=cfg), "sampler": sampler, **options}
        self.latency: list[float] = []
        self.batch_seconds: dict[int, list[float]] = {}
        self.calls, self.peak_mib, self.compile_seconds = 0.0, 0.0, 0.0

    @property
    def name(self) -> str:
        return f"{self.order}/{self.sampler}/{self.mode}/cfg {self.cfg:g}"

    def run(self, batch: int, seed: int) -> float:
        classes = max(self.pipeline.model.config.num_classes, 1)
        labels = [index % classes for index in range(batch)]
        started = time.perf_counter()
        output = self.pipeline(labels, seed=seed, **self.keywords)
        synchronize(self.pipeline.device)
        self.calls = output.forward_passes
        return time.perf_counter() - started


def configurations(arguments: argparse.Namespace, device: torch.device) -> list[Configuration]:
    models = Path(arguments.models)
    found = []
    for order in arguments.orders:
        directory = models / order
        if not (directory / "generator").is_dir():
            print(f"skipped {order}: no model directory {directory}")
            continue
        for mode in arguments.modes:
            pipeline = Pipeline.from_pretrained(directory, device=device, compile=mode == "compiled")
            for sampler in SAMPLERS:
                if sampler not in arguments.samplers or not SAMPLERS.info(sampler).supports(pipeline.order):
                    continue
                options = {}
                if sampler == "collaborative":
                    refiner = models / "refiners" / order
                    if not (refiner / "generator").is_dir():
                        print(f"skipped {order}/collaborative: no refiner {refiner}")
                        continue
                    steps = pipeline.order.layout(pipeline.tokenizer.grid_shapes).num_steps
                    options = {"refiner": str(refiner), "draft_steps": steps // 2}
                for cfg in arguments.cfg_scales:
                    found.append(
                        Configuration(pipeline, order=order, sampler=sampler, mode=mode, cfg=cfg, options=options)
                    )
    return found


def measure_sampling(found: list[Configuration], arguments: argparse.Namespace) -> None:
    if not found:
        return
    batches = sorted(set(arguments.batch_sizes))
    for configuration in found:  # warm-up; compiled pipelines compile every call length here
        started = time.perf_counter()
        for batch in batches:
            configuration.run(batch, 0)
        if configuration.mode == "compiled":
            configuration.compile_seconds = time.perf_counter() - started
    for batch in batches:
        repeats = arguments.repeats if batch == 1 else arguments.batch_repeats
        for repeat in range(repeats):
            rotated = found[repeat % len(found) :] + found[: repeat % len(found)]
            for configuration in rotated:
                seconds = configuration.run(batch, 1 + repeat)
                if batch == 1:
                    configuration.latency.append(seconds)
                else:
                    configuration.batch_seconds.setdefault(batch, []).append(seconds)
        print(f"batch {batch}: {repeats} rounds done", flush=True)
    largest = batches[-1]
    for configuration in found:
        with PeakMemory(configuration.pipeline.device) as memory:
            configuration.run(largest, 0)
        configuration.peak_mib = memory.peak


def measure_training(arguments: argparse.Namespace, device: torch.device) -> dict:
    """Images/s and GFLOP/s of one training step per order, eager and compiled, and the matmul peak."""
    peak = max(statistics.median(time_matmul(size) for _ in range(3)) for size in (1024, 2048))
    results = {"matmul_peak_gflops": peak, "rows": []}
    generator = torch.Generator().manual_seed(0)
    for order_name in arguments.train_orders:
        for mode in arguments.modes:
            tokenizer, order, model = build(order_name, arguments.train_preset)
            model, tokenizer = model.to(device).train(), tokenizer.to(device)
            if mode == "compiled":
                model.compile()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            layout = order.layout(tokenizer.grid_shapes)
            ids, labels = random_batch(tokenizer, arguments.train_batch, generator)
            batch = ([grid.to(device) for grid in ids], labels.to(device))
            started = time.perf_counter()
            for _ in range(2):
                time_training_step(model, optimizer, order, tokenizer, layout, batch)
            warm = time.perf_counter() - started
            seconds = []
            for _ in range(arguments.train_steps):
                synchronize(device)
                seconds.append(time_training_step(model, optimizer, order, tokenizer, layout, batch)["step_seconds"])
            step = statistics.median(seconds)
            flops = flops_per_image(model, layout.length)["train"] * arguments.train_batch
            results["rows"].append({
                "order": order_name, "mode": mode, "images_per_second": arguments.train_batch / step,
                "gflops": flops / step / 1e9, "utilisation": flops / step / 1e9 / peak, "warmup_seconds": warm,
            })  # fmt: skip
            print(f"training {order_name} {mode}: {arguments.train_batch / step:.0f} images/s", flush=True)
    return results


def render(found: list[Configuration], training: dict | None, arguments: argparse.Namespace) -> str:
    batches = sorted(size for size in set(arguments.batch_sizes) if size > 1)
    lines = [
        f"threads {torch.get_num_threads()}, device {arguments.device}; batch 1: median of {arguments.repeats} "
        f"interleaved runs, larger batches: median of {arguments.batch_repeats}; decode included",
        "",
        "| order | sampler | mode | cfg | batch 1 ms/img | × raster | calls | "
        + "".join(f"batch {size} img/s | " for size in batches)
        + f"peak MiB (batch {max(arguments.batch_sizes)}) | compile s |",
        "|---|---|---|---|---|---|---|" + "---|" * len(batches) + "---|---|",
    ]
    reference = {  # empty when batch 1 was not timed (--batch-sizes without 1): the ratio column is then nan
        (c.mode, c.cfg): statistics.median(c.latency)
        for c in found
        if c.order == "raster" and c.sampler == "ar" and c.latency
    }
    for c in found:
        latency = statistics.median(c.latency) if c.latency else float("nan")
        ratio = reference.get((c.mode, c.cfg), float("nan")) / latency
        rates = [size / statistics.median(c.batch_seconds[size]) if size in c.batch_seconds else float("nan")
                 for size in batches]  # fmt: skip
        compiled = f"{c.compile_seconds:.0f}" if c.mode == "compiled" else ""
        lines.append(
            f"| {c.order} | {c.sampler} | {c.mode} | {c.cfg:g} | {latency * 1000:.1f} | {ratio:.2f}× | {c.calls:.0f} | "
            + "".join(f"{rate:.0f} | " for rate in rates)
            + f"{c.peak_mib:.0f} | {compiled} |"
        )
    if training:
        lines += [
            "",
            f"Training step, preset {arguments.train_preset}, batch {arguments.train_batch}; fp32 matmul peak "
            f"{training['matmul_peak_gflops']:.0f} GFLOP/s measured in this run; glibc malloc "
            + ("defaults" if arguments.default_malloc else "thresholds raised (argen.allocator)")
            + ":",
            "",
            "| order | mode | images/s | GFLOP/s | of matmul peak | warm-up s |",
            "|---|---|---|---|---|---|",
        ]
        for row in training["rows"]:
            lines.append(
                f"| {row['order']} | {row['mode']} | {row['images_per_second']:.0f} | {row['gflops']:.1f} | "
                f"{100 * row['utilisation']:.0f} % | {row['warmup_seconds']:.1f} |"
            )
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    def names(text: str) -> list[str]:
        return [part for part in text.split(",") if part]

    def numbers(kind):
        return lambda text: [kind(part) for part in text.split(",") if part]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=str(ROOT / "checkpoints/fashion-mnist"), help="directory of ORDER/ dirs")
    parser.add_argument("--orders", type=names, default=list(ORDERS))
    parser.add_argument("--samplers", type=names, default=list(SAMPLERS))
    parser.add_argument("--modes", type=names, default=["eager", "compiled"], help="eager,compiled")
    parser.add_argument("--cfg-scales", type=numbers(float), default=[1.0, 2.0], help="guidance scales to time")
    parser.add_argument("--batch-sizes", type=numbers(int), default=[1, 64, 256])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved batch-1 rounds")
    parser.add_argument("--batch-repeats", type=int, default=3, help="interleaved rounds at larger batches")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-orders", type=names, default=list(ORDERS), help="orders to time training for")
    parser.add_argument("--train-preset", default="3m")
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=5, help="timed training steps (median)")
    parser.add_argument("--no-training", action="store_true")
    parser.add_argument("--json", help="also write the measurements here")
    parser.add_argument("--quick", action="store_true", help="smoke test: a few configurations at tiny sizes")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc thresholds as they are (the argen command raises them: argen.allocator)",
    )
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.orders, arguments.modes, arguments.batch_sizes = ["raster", "scale"], ["eager"], [1, 4]
        arguments.repeats, arguments.batch_repeats, arguments.cfg_scales = 2, 1, [1.0, 2.0]
        arguments.train_orders, arguments.train_preset, arguments.train_batch = ["raster"], "tiny", 8
        arguments.train_steps = 2
    return arguments


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    torch.set_num_threads(arguments.threads)
    if not arguments.default_malloc:
        from argen.allocator import keep_freed_memory

        keep_freed_memory()  # as the argen command does
    device = torch.device(arguments.device)
    with torch.no_grad():
        found = configurations(arguments, device)
        measure_sampling(found, arguments)
    training = None if arguments.no_training else measure_training(arguments, device)
    print(render(found, training, arguments))
    if arguments.json:
        document = {
            "sampling": [
                {"order": c.order, "sampler": c.sampler, "mode": c.mode, "cfg_scale": c.cfg, "calls": c.calls,
                 "batch1_seconds": c.latency, "batch_seconds": c.batch_seconds, "peak_mib": c.peak_mib,
                 "compile_seconds": c.compile_seconds}
                for c in found
            ],
            "training": training,
        }  # fmt: skip
        Path(arguments.json).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
