"""The four orders on equal terms: learning curves, a sampling-settings sweep, and the final table.

    OMP_NUM_THREADS=1 python bench/convergence.py curves --runs runs/fashion-mnist --out runs/convergence
    OMP_NUM_THREADS=1 python bench/convergence.py sweep  --runs runs/fashion-mnist --out runs/convergence
    OMP_NUM_THREADS=1 python bench/convergence.py final  --runs runs/fashion-mnist --out runs/convergence
    python bench/convergence.py table --finals bench/results/convergence-final.json runs/convergence/final.json

The runs are the recipes in configs/fashion-mnist/ (`argen train --config FILE`): {raster,scale,frequency,
neighbor}.toml and seed1/{scale,frequency}.toml (1400 steps), long/raster.toml (2800 steps) and epochs8/{scale,
frequency}.toml and epochs8/seed1/{scale,frequency}.toml (7500 steps, 8 epochs); each keeps a copy of its weights
every few hundred steps (`--keep-every`, RUN/snapshots/step-N). A run that is still training contributes the
snapshots it has so far to ``curves``, and ``--previous FILE`` adds, from an earlier curves.json, the rows of every
(run, step) not evaluated now: runs no longer on disk, or snapshots deleted after they were scored
(bench/results/convergence-curves.json holds the 1400-step runs').

- ``curves``: FID and class accuracy of 2 000 samples (classes balanced, seed 0, guidance 2, batch 100) of every
  snapshot against the 60 000 training images, with the epoch and the wall-minutes of training it took (the
  trainer's own ``elapsed_seconds``, one thread, on a 2-core machine shared with other jobs: an upper bound on
  CPU-minutes). Writes OUT/curves.json, OUT/curves.md and OUT/curves.png.
- ``sweep``: the sampling settings of each run in SWEEP_RUNS — guidance scale × top-k — scored by FID of 2 000
  samples against the 10 000 *test* images (held out from training and from the final table's reference); the
  lowest FID among the settings with at least 90 % class accuracy is written to RUN/sampling.json, which `argen
  sample`, `argen eval`, `argen demo` and `Pipeline` use when the caller gives no setting of their own. Writes
  OUT/sweep.json and OUT/sweep.md.
- ``final``: 10 000 samples per run at its recommended settings against the training images, with the spectral
  metrics. Writes OUT/final.json and OUT/final.md.
- ``seeds``: the two training seeds of scale and frequency side by side at every step where both kept a snapshot
  (from ``--curves FILE``, a curves.json), with each order's seed-to-seed difference and frequency − scale per seed:
  the same recipe and learning-rate schedule, so a matched step is a matched point of training even when the second
  seed's run stopped early. Writes OUT/seeds.md.

Every evaluation is cached in OUT/cache/ under the model's weight fingerprint and the settings, so a rerun only
evaluates what changed. Speed is not measured here (the machine was shared with the trainings).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

# label → run directory under --runs. Raster's equal-steps entry is step 1400 of its 2800-step run (configs/
# fashion-mnist/long/raster.toml): the CPU budget did not allow a separate 1400-step raster run, so at 1400 steps its
# learning rate had not finished decaying (cosine to 2800) — a handicap for raster, stated wherever it is shown.
RUNS = {
    "raster": "long/raster/snapshots/step-1400",
    "neighbor": "neighbor",
    "scale": "scale",
    "frequency": "frequency",
    "seed1/scale": "seed1/scale",
    "seed1/frequency": "seed1/frequency",
    "long/raster": "long/raster",
    # 8 epochs (7500 steps, configs/fashion-mnist/epochs8/), the same recipe otherwise
    "epochs8/scale": "epochs8/scale",
    "epochs8/frequency": "epochs8/frequency",
    "epochs8/raster": "epochs8/raster",
    "epochs8/neighbor": "epochs8/neighbor",
    "epochs8/seed1/scale": "epochs8/seed1/scale",
    "epochs8/seed1/frequency": "epochs8/seed1/frequency",
}
CURVE_SETTINGS = {"cfg_scale": 2.0}
# second seeds: final points only (CPU budget)
CURVE_RUNS = ["neighbor", "scale", "frequency", "long/raster", "epochs8/scale", "epochs8/frequency", "epochs8/raster",
              "epochs8/neighbor"]  # fmt: skip
# A second seed samples with its first seed's settings, a longer run with the equal-steps run's; every other run's
# own sweep picks its settings.
SETTINGS_FROM = {"seed1/scale": "scale", "seed1/frequency": "frequency", "long/raster": "raster",
                 "epochs8/seed1/scale": "epochs8/scale", "epochs8/seed1/frequency": "epochs8/frequency"}  # fmt: skip
SWEEP_RUNS = [name for name in RUNS if name not in SETTINGS_FROM]
BATCH_SIZE, TRAINING_IMAGES = 64, 60000  # the recipes' batch and the Fashion-MNIST training set


def epochs(steps: int) -> float:
    return steps * BATCH_SIZE / TRAINING_IMAGES


# Guidance 1.5 / 2 / 3 over the whole vocabulary, and top-k 100 at guidance 2 (top-k 0 = the whole vocabulary).
SWEEP = [{"cfg_scale": 1.5, "top_k": 0}, {"cfg_scale": 2.0, "top_k": 0}, {"cfg_scale": 3.0, "top_k": 0},
         {"cfg_scale": 2.0, "top_k": 100}]  # fmt: skip


def fingerprint(model: Path) -> str:
    digest = hashlib.sha256()
    for part in ("generator", "tokenizer"):
        digest.update((model / part / "model.safetensors").read_bytes())
    return digest.hexdigest()[:16]


class Evaluator:
    """`argen eval` in one process: the classifier and both references are loaded once for all models."""

    def __init__(self, arguments: argparse.Namespace):
        from argen.metrics.evaluate import load_evaluation_classifier, reference_features

        self.arguments = arguments
        self.cache = Path(arguments.out) / "cache"
        self.cache.mkdir(parents=True, exist_ok=True)
        self.classifier, _ = load_evaluation_classifier(arguments.classifier)
        self.references = {
            split: reference_features(self.classifier, "fashion-mnist", split=split, progress=False)
            for split in ("train", "test")
        }

    def __call__(self, model: Path, *, num: int, reference: str = "train", **settings) -> dict:
        from argen.metrics.evaluate import evaluate_generator

        key = json.dumps({"model": fingerprint(model), "num": num, "reference": reference, **settings}, sort_keys=True)
        path = self.cache / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
        if path.is_file():
            return json.loads(path.read_text())
        print(f"evaluating {model} on {num} samples {settings} against {reference}", flush=True)
        results = evaluate_generator(
            classifier=self.arguments.classifier,
            data="fashion-mnist",
            model=model,
            num_images=num,
            reference_split=reference,
            reference=self.references[reference],
            batch_size=100,
            seed=0,
            progress=False,
            **settings,
        )
        path.write_text(json.dumps(results, indent=2) + "\n")
        return results


def trained_runs(root: Path, *, names: list[str] | None = None) -> list[tuple[str, Path]]:
    """The runs that finished training (a run still going is skipped, so this can be rerun as runs finish)."""
    finished = []
    for name in names or RUNS:
        run = root / RUNS[name]
        config = run / "generator" / "config.json"
        if config.is_file() and (json.loads(config.read_text())["extra"].get("complete") or "snapshots" in run.parts):
            finished.append((name, run))
    return finished


def training_log(run: Path) -> dict[int, dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    return {record["step"]: record for record in map(json.loads, lines)}


def curves(arguments: argparse.Namespace, evaluate: Evaluator) -> None:
    rows = []
    # a run still training contributes the snapshots it has kept so far
    names = [
        name for name in arguments.only or CURVE_RUNS if (Path(arguments.runs) / RUNS[name] / "snapshots").is_dir()
    ]
    for name, run in ((name, Path(arguments.runs) / RUNS[name]) for name in names):
        log = training_log(run)
        snapshots = sorted((run / "snapshots").glob("step-*"), key=lambda path: int(path.name.split("-")[1]))
        for snapshot in snapshots:
            step = int(snapshot.name.split("-")[1])
            results = evaluate(snapshot, num=2000, **CURVE_SETTINGS)
            # metrics.jsonl has a line every 20 steps: take the last one at or before the snapshot
            logged = [index for index in log if index <= step]
            record = log[max(logged)] if logged else {}
            rows.append(
                {
                    "run": name,
                    "step": step,
                    "epoch": epochs(step),
                    "cpu_minutes": record.get("elapsed_seconds", float("nan")) / 60,
                    "fid": results["fid"],
                    "class_accuracy": results["class_accuracy"],
                }
            )
    if arguments.previous:  # rows of snapshots no longer on disk (or not kept again), from an earlier curves.json
        evaluated = {(row["run"], row["step"]) for row in rows}
        earlier = json.loads(Path(arguments.previous).read_text())
        rows = [row for row in earlier if (row["run"], row["step"]) not in evaluated] + rows
        rows.sort(key=lambda row: (list(RUNS).index(row["run"]) if row["run"] in RUNS else len(RUNS), row["step"]))
    out = Path(arguments.out)
    (out / "curves.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "| run | step | epoch | training wall-minutes | FID (2 000) ↓ | class accuracy ↑ |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['run']} | {row['step']} | {row['epoch']:.2f} | {row['cpu_minutes']:.1f} | {row['fid']:.3f} | "
        f"{row['class_accuracy']:.1%} |"
        for row in rows
    ]
    (out / "curves.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_curves(rows, out / "curves.png")


def plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for name in dict.fromkeys(row["run"] for row in rows):
        points = [row for row in rows if row["run"] == name]
        style = "--" if "seed1/" in name else ":" if not name.startswith("epochs8/") else "-"
        for axis, key in zip(axes, ("epoch", "cpu_minutes")):
            axis.plot([p[key] for p in points], [p["fid"] for p in points], style, marker="o", label=name)
    axes[0].set_xlabel("training epochs")
    axes[1].set_xlabel("wall-minutes of training (one thread, shared 2-core machine)")
    axes[0].set_ylabel("FID, 2 000 samples, guidance 2 ↓")
    for axis in axes:
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


def sweep(arguments: argparse.Namespace, evaluate: Evaluator) -> None:
    from argen.metrics.tuning import tune_sampling

    table = {}
    for name, run in trained_runs(Path(arguments.runs), names=arguments.only or SWEEP_RUNS):
        # Samples should be of the class asked for: the lowest FID among settings with ≥ 90 % class accuracy
        # (argen.metrics.tuning, as `argen tune` runs it, on this script's grid and cached evaluations).
        result = tune_sampling(
            run, classifier=arguments.classifier, data="fashion-mnist", num_images=2000, reference_split="test",
            grid=SWEEP, min_class_accuracy=0.9, seed=0, progress=False,
            evaluate=lambda settings, run=run: evaluate(run, num=2000, reference="test", **settings),
        )  # fmt: skip
        table[name] = {"scores": result["scores"], "recommended": result["recommended"]}
    out = Path(arguments.out)
    (out / "sweep.json").write_text(json.dumps(table, indent=2) + "\n")
    header = " | ".join(f"cfg {settings['cfg_scale']}, top-k {settings['top_k'] or 'all'}" for settings in SWEEP)
    lines = [f"| run | {header} | chosen |", "|---|" + "---|" * (len(SWEEP) + 1)]
    for name, entry in table.items():
        cells = " | ".join(f"{score['fid']:.3f} ({score['class_accuracy']:.0%})" for score in entry["scores"])
        chosen = entry["recommended"]
        lines.append(f"| {name} | {cells} | cfg {chosen['cfg_scale']}, top-k {chosen['top_k'] or 'all'} |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def lower_guidance(arguments: argparse.Namespace, evaluate: Evaluator) -> None:
    """``sweep --lower-guidance 1.0,1.25``: the sweep's measurement at guidance values below its grid, printed only
    (sampling.json is left as the sweep wrote it)."""
    lines = ["| run | guidance | FID (2 000, test) ↓ | class accuracy ↑ |", "|---|---|---|---|"]
    for name, run in trained_runs(Path(arguments.runs), names=arguments.only or SWEEP_RUNS):
        for cfg_scale in arguments.lower_guidance:
            results = evaluate(run, num=2000, reference="test", cfg_scale=cfg_scale, top_k=0)
            lines.append(f"| {name} | {cfg_scale:g} | {results['fid']:.3f} | {results['class_accuracy']:.1%} |")
    print("\n".join(lines))


def recommended_settings(runs: Path, name: str) -> tuple[dict, str]:
    """The sampling settings ``final`` evaluates run ``name`` at, and where they came from.

    A second seed (or a longer run) takes those of the run named in SETTINGS_FROM. When that run's directory is gone
    (runs/ does not outlive a session) but it is the one a shipped model was exported from, the shipped model's
    sampling.json holds the same sweep result; failing both, the curves' settings, said in the returned source."""
    source_name = SETTINGS_FROM.get(name, name)
    candidates = [runs / RUNS[source_name] / "sampling.json"]
    candidates += [SHIPPED_DIRECTORY / order / "sampling.json" for order, run in SHIPPED.items() if run == source_name]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())["recommended"], str(path)
    return dict(CURVE_SETTINGS), f"the curves' settings (no sampling.json for {source_name})"


def final(arguments: argparse.Namespace, evaluate: Evaluator) -> None:
    table = {}
    for name, run in trained_runs(Path(arguments.runs), names=arguments.only):
        settings, source = recommended_settings(Path(arguments.runs), name)
        print(f"{name}: {settings} from {source}", flush=True)
        table[name] = {"settings": settings, **evaluate(run, num=10000, **settings)}
    out = Path(arguments.out)
    (out / "final.json").write_text(json.dumps(table, indent=2) + "\n")
    columns = ["fid", "class_accuracy", "precision", "recall", "energy_ratio_low", "energy_ratio_mid",
               "energy_ratio_high", "frequency_keep_score"]  # fmt: skip
    lines = ["| run | settings | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for name, entry in table.items():
        settings = entry["settings"]
        cells = " | ".join(
            f"{entry[key]:.1%}" if key == "class_accuracy" else f"{entry[key]:.3f}" for key in columns if key in entry
        )
        lines.append(f"| {name} | cfg {settings.get('cfg_scale')}, top-k {settings.get('top_k') or 'all'} | {cells} |")
    (out / "final.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if arguments.results:
        write_shipped_results(arguments, table)


# The comparison table of docs/results.md: label, tokenizer and training steps of each run name.
TABLE_RUNS = {
    "raster": ("raster (step 1400 of its 2800-step run)", "vq", 1400),
    "neighbor": ("neighbor", "vq", 1400),
    "scale": ("scale, seed 0", "multiscale", 1400),
    "seed1/scale": ("scale, seed 1", "multiscale", 1400),
    "frequency": ("frequency, seed 0", "frequency (grid)", 1400),
    "seed1/frequency": ("frequency, seed 1", "frequency (grid)", 1400),
    "long/raster": ("raster, 2800 steps", "vq", 2800),
    "epochs8/raster": ("raster, 8 epochs (shipped)", "vq", 7500),
    "epochs8/neighbor": ("neighbor, 8 epochs (shipped)", "vq", 7500),
    "epochs8/scale": ("scale, 8 epochs (shipped)", "multiscale", 7500),
    "epochs8/seed1/scale": ("scale, 8 epochs, seed 1", "multiscale", 7500),
    "epochs8/frequency": ("frequency, 8 epochs (shipped)", "frequency (grid)", 7500),
    "epochs8/seed1/frequency": ("frequency, 8 epochs, seed 1", "frequency (grid)", 7500),
}


def table(arguments: argparse.Namespace) -> None:
    """Print the comparison table of docs/results.md from the final.json files given with --finals (later files win)."""
    entries: dict[str, dict] = {}
    for path in arguments.finals:
        entries.update(json.loads(Path(path).read_text()))
    lines = [
        "| order | tokenizer | steps (epochs) | sampling | FID ↓ | KID×1000 ↓ | IS ↑ | precision ↑ | recall ↑ | "
        "class accuracy ↑ | high-band energy ratio | frequency keep score ↑ | passes/image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (label, tokenizer, steps) in TABLE_RUNS.items():
        if name not in entries:
            continue
        entry, settings = entries[name], entries[name]["settings"]
        lines.append(
            f"| {label} | {tokenizer} | {steps} ({epochs(steps):.2f}) | cfg {settings['cfg_scale']}, top-k "
            f"{settings.get('top_k') or 'all'} | {entry['fid']:.3f} | {1000 * entry['kid']:.1f} ± "
            f"{1000 * entry['kid_std']:.1f} | {entry['inception_score']:.2f} | {entry['precision']:.3f} | "
            f"{entry['recall']:.3f} | {entry['class_accuracy']:.1%} | {entry['energy_ratio_high']:.3f} | "
            f"{entry['frequency_keep_score']:.3f} | {entry['forward_passes_per_image']:.0f} |"
        )
    print("\n".join(lines))


# Which run each shipped model directory (checkpoints/fashion-mnist/ORDER) was exported from.
SHIPPED_DIRECTORY = Path(__file__).resolve().parent.parent / "checkpoints" / "fashion-mnist"
SHIPPED = {
    "raster": "epochs8/raster",
    "scale": "epochs8/scale",
    "frequency": "epochs8/frequency",
    "neighbor": "epochs8/neighbor",
}


def write_shipped_results(arguments: argparse.Namespace, table: dict) -> None:
    """CHECKPOINTS/results.json in `argen bench`'s format (what `argen demo` shows), from the final evaluations of
    the runs the shipped models came from; the real-images row is kept from the file already there."""
    path = Path(arguments.results)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    orders = dict(previous.get("orders", {}))  # an order not evaluated in this run keeps its entry
    for order, name in SHIPPED.items():
        if name not in table:
            continue
        entry = {key: value for key, value in table[name].items() if key != "radial_power_spectrum"}
        run = Path(arguments.runs) / RUNS[name]
        entry["training"] = {"steps": json.loads((run / "generator" / "config.json").read_text())["extra"]["step"]}
        orders[order] = entry
    document = {
        "data": "fashion-mnist",
        "command": "python bench/convergence.py final --results checkpoints/fashion-mnist/results.json",
        "num_images": 10000,
        "cfg_scale": None,  # each model at its own recommended settings (sampling.json)
        "classifier": arguments.classifier,
        "real": previous.get("real"),
        "orders": orders,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")


SEED_PAIRS = {"scale": ("epochs8/scale", "epochs8/seed1/scale"),
              "frequency": ("epochs8/frequency", "epochs8/seed1/frequency")}  # fmt: skip


def seeds(arguments: argparse.Namespace) -> None:
    """Seed 0 against seed 1 of each order at the steps both kept, from a curves.json (no evaluation)."""
    rows = json.loads(Path(arguments.curves).read_text())
    fid = {(row["run"], row["step"]): row["fid"] for row in rows}
    runs = [name for pair in SEED_PAIRS.values() for name in pair]
    steps = sorted(set.intersection(*({step for (run, step) in fid if run == name} for name in runs)))
    if not steps:
        raise SystemExit(f"{arguments.curves} has no step at which both seeds of both orders were evaluated")
    lines = [
        "| step | epoch | scale seed 0 | scale seed 1 | frequency seed 0 | frequency seed 1 | "
        "frequency − scale, seed 0 | frequency − scale, seed 1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    spreads: dict[str, list[float]] = {order: [] for order in SEED_PAIRS}
    all_gaps = []  # per step, frequency − scale for seed 0 and seed 1
    for step in steps:
        values = {order: [fid[(name, step)] for name in pair] for order, pair in SEED_PAIRS.items()}
        for order in SEED_PAIRS:
            spreads[order].append(abs(values[order][0] - values[order][1]))
        gaps = [values["frequency"][seed] - values["scale"][seed] for seed in (0, 1)]
        all_gaps.append(gaps)
        lines.append(
            f"| {step} | {epochs(step):.2f} | {values['scale'][0]:.3f} | {values['scale'][1]:.3f} | "
            f"{values['frequency'][0]:.3f} | {values['frequency'][1]:.3f} | {gaps[0]:+.3f} | {gaps[1]:+.3f} |"
        )
    ahead = [sum(gaps[seed] < 0 for gaps in all_gaps) for seed in (0, 1)]  # steps where frequency is lower
    lines.append("")
    lines.append(
        "Mean seed-to-seed |difference|: "
        + ", ".join(f"{order} {sum(values) / len(values):.3f}" for order, values in spreads.items())
        + f". Frequency ahead of scale at {ahead[0]} of {len(steps)} steps with seed 0 and {ahead[1]} of "
        f"{len(steps)} with seed 1."
    )
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("curves", "sweep", "final", "table", "seeds"))
    parser.add_argument("--runs", default="runs/fashion-mnist", help="folder holding the run directories")
    parser.add_argument("--out", default="runs/convergence")
    parser.add_argument("--classifier", default="checkpoints/fashion-mnist/classifier")
    parser.add_argument("--results", help="final: also write this results.json (argen bench's format) for the demo")
    parser.add_argument("--previous", help="curves: add the rows of runs not evaluated now from this curves.json")
    parser.add_argument("--only", type=lambda text: text.split(","), help="these runs only, e.g. raster,epochs8/scale")
    parser.add_argument("--curves", default="runs/convergence/curves.json", help="seeds: the curves.json to read")
    parser.add_argument("--finals", nargs="+", default=[], help="table: final.json files (later files win)")
    parser.add_argument(
        "--lower-guidance",
        type=lambda text: [float(value) for value in text.split(",")],
        help="sweep: only print these guidance values (whole vocabulary) instead of sweeping",
    )
    arguments = parser.parse_args(argv)
    if arguments.what == "table":
        return table(arguments)
    if arguments.what == "seeds":
        return seeds(arguments)
    evaluate = Evaluator(arguments)
    if arguments.what == "sweep" and arguments.lower_guidance:
        return lower_guidance(arguments, evaluate)
    {"curves": curves, "sweep": sweep, "final": final}[arguments.what](arguments, evaluate)


if __name__ == "__main__":
    sys.exit(main())
