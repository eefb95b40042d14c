"""Collaborative decoding (CoDe, "Collaborative Decoding Makes Visual Auto-Regressive Modeling Efficient", arXiv
2411.17787) against the large and the small model alone, on trained models.

    OMP_NUM_THREADS=1 python bench/collaborative.py --orders frequency,scale --images 128 --rounds 3 \
        --drafters checkpoints/fashion-mnist --refiners checkpoints/fashion-mnist/refiners

For each order, the drafter is ``--drafters/ORDER`` (an `argen train` model directory: the shipped 1m-preset models)
and the refiner ``--refiners/ORDER`` (a smaller model trained with the same order on the same tokenizer: the shipped
0.23 M refiners). Variants: "large" (plain decoding with the drafter), "small" (plain decoding with the refiner) and
"CoDe N=n" for n = 1 .. S-1 (the drafter makes n steps, the refiner the other S - n), all at ``--batch-size`` with
cfg ``--cfg-scale``, the same labels and the same seeds.

Per variant: images/s of sampling alone (token ids, as the paper measures, without the decoder), images/s with the
tokenizer's decoder as `argen sample` runs it, model calls per image of each model (a call serves every image of its
batch, so plain decoding makes S per image), and the speed-up over "large": the median over rounds of the per-round
ratio of sampling times. Variants run interleaved in rounds, in an order rotated each round, so that the other jobs
on the machine slow every variant alike; numbers are medians over ``--rounds``. The FID column is left for
``argen eval`` to fill. Results go to ``--out`` (markdown) and the same path with .json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from provenance import describe_machine, describe_run, machine_record, start_clock, write_results

from argen.pipeline import Pipeline
from argen.samplers import SAMPLERS, generate, generate_collaborative

ROOT = Path(__file__).resolve().parent.parent


def variants(num_steps: int) -> dict[str, int | None]:
    """Variant name → draft steps for collaborative decoding, None for one model alone."""
    return {"large": None, "small": None, **{f"CoDe N={steps}": steps for steps in range(1, num_steps)}}


def measure(
    drafter: Pipeline, refiner: Pipeline, name: str, draft_steps: int | None, labels: torch.Tensor, *, batch: int,
    cfg_scale: float,
) -> dict[str, float]:  # fmt: skip
    """Generate ``labels`` in batches of ``batch``: sampling seconds, decoding seconds and calls per model."""
    sampling = decoding = 0.0
    calls = {"drafter": 0, "refiner": 0}
    for start in range(0, len(labels), batch):
        chunk = labels[start : start + batch]
        options = dict(labels=chunk, cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(start))
        began = time.perf_counter()
        if name == "large":
            output = generate(drafter.engine, drafter.order, drafter.tokenizer, **options)
            split = {"drafter": output.forward_passes, "refiner": 0}
        elif name == "small":
            output = generate(refiner.engine, refiner.order, refiner.tokenizer, **options)
            split = {"drafter": 0, "refiner": output.forward_passes}
        else:
            output = generate_collaborative(
                drafter.engine, drafter.order, drafter.tokenizer, refiner=refiner.engine, draft_steps=draft_steps,
                **options,
            )  # fmt: skip
            split = output.passes_by_model
        middle = time.perf_counter()
        drafter.tokenizer.decode(output.ids)
        decoding += time.perf_counter() - middle
        sampling += middle - began
        for model, count in split.items():
            calls[model] += count * len(chunk)  # a call serves every image of its batch
    return {
        "sampling_seconds": sampling,
        "decoding_seconds": decoding,
        "large_calls_per_image": calls["drafter"] / len(labels),
        "small_calls_per_image": calls["refiner"] / len(labels),
    }


def parameters(pipeline: Pipeline) -> int:
    return sum(parameter.numel() for parameter in pipeline.model.parameters())


def bench_order(order_name: str, arguments: argparse.Namespace) -> list[dict]:
    """Every variant of one order: interleaved timed rounds after a warm-up, medians, one row per variant."""
    results = []
    drafter = Pipeline.from_pretrained(Path(arguments.drafters) / order_name)
    refiner = Pipeline.from_pretrained(Path(arguments.refiners) / order_name)
    drafter.refiner_engine(refiner)  # same order and tokenizer, or a one-line error before any timing
    num_steps = drafter.order.layout(drafter.tokenizer.grid_shapes).num_steps
    classes = max(1, drafter.model.config.num_classes)
    labels = torch.arange(arguments.images) % classes
    named = variants(num_steps)
    for name, draft_steps in named.items():  # warm-up: first calls allocate and pick kernels
        measure(drafter, refiner, name, draft_steps, labels[: arguments.batch_size], batch=arguments.batch_size,
                cfg_scale=arguments.cfg_scale)  # fmt: skip
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in named}
    for round_index in range(arguments.rounds):
        names = list(named)
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            rounds[name].append(
                measure(drafter, refiner, name, named[name], labels, batch=arguments.batch_size,
                        cfg_scale=arguments.cfg_scale)
            )  # fmt: skip
        print(f"{order_name}: round {round_index + 1}/{arguments.rounds} done", file=sys.stderr)
    for name, draft_steps in named.items():
        measured = rounds[name]
        sampling = [entry["sampling_seconds"] for entry in measured]
        total = [entry["sampling_seconds"] + entry["decoding_seconds"] for entry in measured]
        ratios = [
            large["sampling_seconds"] / entry["sampling_seconds"] for large, entry in zip(rounds["large"], measured)
        ]
        results.append({
            "order": order_name,
            "variant": name,
            "draft_steps": {"large": num_steps, "small": 0}.get(name, draft_steps),
            "num_steps": num_steps,
            "large_calls_per_image": measured[0]["large_calls_per_image"],
            "small_calls_per_image": measured[0]["small_calls_per_image"],
            "images_per_second": arguments.images / statistics.median(sampling),
            "images_per_second_with_decoding": arguments.images / statistics.median(total),
            "speedup_vs_large": statistics.median(ratios),
            "sampling_seconds": sampling,
            "drafter": str(Path(arguments.drafters) / order_name),
            "refiner": str(Path(arguments.refiners) / order_name),
            "drafter_parameters": parameters(drafter),
            "refiner_parameters": parameters(refiner),
            "fid": None,  # filled by `argen eval`
        })  # fmt: skip

    return results


def render(results: list[dict], arguments: argparse.Namespace, machine: dict, command: str) -> str:
    """The markdown table of the rows, with the command and the machine above and the model sizes below."""
    lines = [
        f"`{command}`",
        "",
        f"Batch {arguments.batch_size}, cfg {arguments.cfg_scale}, {arguments.images} images per variant and round, "
        f"medians of {arguments.rounds} interleaved rounds; {describe_machine(machine, arguments.threads)}; "
        f"{describe_run(machine)}",
        "",
        "| order | variant | draft steps | large calls/img | small calls/img | img/s sampling | img/s with decoder "
        "| speed-up vs large | FID |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        fid = "–" if row["fid"] is None else f"{row['fid']:.2f}"
        lines.append(
            f"| {row['order']} | {row['variant']} | {row['draft_steps']}/{row['num_steps']} | "
            f"{row['large_calls_per_image']:.0f} | {row['small_calls_per_image']:.0f} | "
            f"{row['images_per_second']:.0f} | {row['images_per_second_with_decoding']:.0f} | "
            f"{row['speedup_vs_large']:.2f}× | {fid} |"
        )
    sizes = {(row["order"], row["drafter"], row["refiner"]): row for row in results}
    lines.append("")
    for (order_name, drafter_path, refiner_path), row in sizes.items():
        lines.append(
            f"{order_name}: large = `{drafter_path}` ({row['drafter_parameters'] / 1e6:.2f}M parameters), small = "
            f"`{refiner_path}` ({row['refiner_parameters'] / 1e6:.2f}M parameters)."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fits = SAMPLERS.info("collaborative").supported_orders()  # the coarse-to-fine orders, from the registry
    parser.add_argument("--orders", default=",".join(reversed(fits)), help=f"comma-separated: {', '.join(fits)}")
    parser.add_argument("--drafters", default="runs/generators", help="folder of the large model directories, by order")
    parser.add_argument("--refiners", default="runs/refiners", help="folder of the small model directories, by order")
    parser.add_argument("--images", type=int, default=128, help="images per variant and round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cfg-scale", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/collaborative.md")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    command = "OMP_NUM_THREADS=1 python bench/collaborative.py " + " ".join(sys.argv[1:])
    clock = start_clock()

    results = [row for order_name in arguments.orders.split(",") for row in bench_order(order_name, arguments)]
    machine = machine_record(**clock, threads=arguments.threads)
    table = render(results, arguments, machine, command)
    document = {"settings": {**vars(arguments), "command": command}, "machine": machine, "results": results}
    write_results(arguments.out, table + "\n", document)
    print(table)


if __name__ == "__main__":
    main()
