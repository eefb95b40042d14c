"""`argen bench`: every generation order trained and measured on equal terms, in one command.

The question it answers is the one argen exists for: on the same data, which order (raster next-token as in
LlamaGen, next-scale as in VAR, next-frequency as in NFIG, next-neighbor as in NAR) gives the best images for the
compute, and how fast does each sample? A comparison only answers that when nothing but the order differs, so
every setting is shared: one transformer preset, batch size, learning rate, schedule and training budget for all
generators; one tokenizer recipe (width, latent channels, codebook size, budget) for every tokenizer kind (raster
and next-neighbor read a single vq grid, next-scale the multiscale grids, next-frequency the frequency bands); one
classifier whose features score every order against the same real reference split; one sampling setting (guidance
scale, seed, image count). ``--steps`` gives every generator exactly the same number of updates; ``--minutes`` the
same wall time, in which orders with more tokens per image (104 for the multi-grid tokenizers against 49) take
fewer steps.

Layout of OUT::

    tokenizers/<kind>/      tokenizer runs (argen train-tokenizer --out)
    <order>/                model directories (argen train --out); <order>/eval.json caches the measurements
    classifier/             the feature classifier, trained only when --classifier is not given and none is shipped
    results.json            everything measured (the schema `argen demo` reads), results.md the tables,
    quality-speed.png       FID against images/s, samples-<order>.png (a row per class), progress-<order>.gif

Rerunning resumes: a finished training returns at once, a measurement is reused while its settings (model weights,
classifier, image count, guidance, seed) are unchanged, so only what is missing or changed is redone.
``evaluate_only`` measures model directories already in OUT (the shipped checkpoints, say) without training.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from argen.checkpoint import atomic_write_text, shipped_checkpoint
from argen.errors import ArgenError
from argen.orders import ORDERS, default_tokenizers

EVAL_NAME = "eval.json"
REFERENCE_SPLIT = "train"

# The shared recipe (bench/tokenizers.py and bench/generators.py measured it): tokenizers at batch 32, lr 2e-3
# without EMA (train-tokenizer's default); generators at batch 64, lr 2e-3, weight decay 0.05; the classifier at
# train-classifier's defaults.
TOKENIZER_BATCH_SIZE = 32
TOKENIZER_LEARNING_RATE = 2e-3
GENERATOR_WEIGHT_DECAY = 0.05
CLASSIFIER_BATCH_SIZE = 128
CLASSIFIER_LEARNING_RATE = 2e-3
CLASSIFIER_WEIGHT_DECAY = 0.05
SAVE_EVERY = 200


def default_out(data: str) -> str:
    """runs/bench/<data>, with a folder source named after its last path part."""
    name = Path(data.removeprefix("folder:")).name if data.startswith("folder:") else data
    return str(Path("runs") / "bench" / (re.sub(r"[^A-Za-z0-9._-]+", "-", name) or "data"))


def check_evaluation_extras() -> None:
    """Refuse before any training when the `eval` extra is missing: the plot and the metrics need it."""
    for module in ("matplotlib", "torchmetrics"):
        try:
            __import__(module)
        except ImportError:
            raise ArgenError(f"argen bench needs {module}: pip install 'argen[eval]'") from None


def cached(path: Path, section: str, settings: dict, compute: Callable[[], dict], *, force: bool = False) -> dict:
    """``compute()``, or the result stored under ``section`` of the JSON file ``path`` when made with ``settings``.

    ``settings`` must be plain JSON (no tuples) so that what is read back compares equal to what is asked.
    """
    document = json.loads(path.read_text()) if path.is_file() else {}
    entry = document.get(section)
    if not force and isinstance(entry, dict) and entry.get("settings") == settings:
        return entry["results"]
    results = compute()
    document = json.loads(path.read_text()) if path.is_file() else {}  # reread: another section may be newer
    document[section] = {"settings": settings, "results": results}
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")
    return results


def count_parameters(release: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(release / "model.safetensors"), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())


def training_summary(model_directory: Path) -> dict | None:
    """Steps (from the release), minutes and final loss (the last logged interval of metrics.jsonl) of a model
    directory; fields that were not recorded are None, and None in all when nothing was (a bare release)."""
    from argen.train import METRICS_NAME

    document = json.loads((model_directory / "generator" / "config.json").read_text())
    steps = document.get("extra", {}).get("step")
    minutes = final_loss = None
    metrics = model_directory / METRICS_NAME
    if metrics.is_file():
        lines = [line for line in metrics.read_text().splitlines() if line.strip()]
        if lines:
            last = json.loads(lines[-1])
            minutes, final_loss = last.get("elapsed_seconds", 0.0) / 60, last.get("loss")
            steps = steps if steps is not None else last.get("step")
    if steps is None and minutes is None:
        return None
    return {"steps": steps, "minutes": minutes, "final_loss": final_loss}


def stopped_by_user(result) -> None:
    """fit turns the first Ctrl-C into a clean stop; the bench must not go on with a half-trained component."""
    if result.reason == "interrupted":
        raise KeyboardInterrupt


def run_benchmark(
    data: str,
    *,
    out: str | Path | None = None,
    minutes: float | None = None,
    steps: int | None = None,
    tokenizer_minutes: float | None = None,
    tokenizer_steps: int | None = None,
    preset: str = "1m",
    orders: tuple[str, ...] | list[str] | None = None,
    num_images: int = 10000,
    classifier: str | Path | None = None,
    classifier_steps: int = 1000,
    cfg_scale: float = 2.0,
    evaluate_only: bool = False,
    data_dir: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    warmup_steps: int = 200,
    tokenizer_width: int = 16,
    latent_dim: int = 32,
    codebook_size: int = 1024,
    per_class: int = 8,
    seed: int = 0,
    evaluation_batch_size: int = 100,
    device: str | None = None,
    command: str | None = None,
    progress: bool = True,
) -> dict:
    """Train (or reuse) the tokenizers, the classifier and one generator per order in ``out``, measure them, and
    write ``results.json``, ``results.md``, ``quality-speed.png`` and a sample grid and GIF per order.

    ``minutes``/``steps`` is each generator's budget, ``tokenizer_minutes``/``tokenizer_steps`` each tokenizer's
    (default: the generator budget). ``num_images`` images per order (and of the real test split, the floor row)
    are scored against the train split with ``classifier`` (default: the shipped one for ``data``, else one
    trained in ``out/classifier`` for ``classifier_steps`` steps). ``command`` is recorded as what produced the
    results. Returns the results.json document.
    """
    import torch

    from argen.checkpoint import release_fingerprint

    out = Path(out or default_out(data))
    orders = list(dict.fromkeys(orders if orders is not None else ORDERS))
    unknown = [order for order in orders if order not in ORDERS]
    if unknown or not orders:
        raise ArgenError(f"unknown order {', '.join(unknown) or '(none)'}: choose from {', '.join(ORDERS)}")
    if num_images < 2:
        raise ArgenError(f"--num {num_images}: FID needs at least 2 images per order")
    if per_class < 1:
        raise ArgenError(f"--per-class {per_class}: the sample grids need at least one image per class")
    check_evaluation_extras()
    if evaluate_only:
        for order in orders:
            for part in ("generator", "tokenizer"):
                if not (out / order / part / "config.json").is_file():
                    raise ArgenError(
                        f"--evaluate-only: {out / order} has no trained model ({part}/config.json is missing); "
                        "train it with `argen bench` without --evaluate-only, or leave it out of --orders"
                    )
    elif minutes is None and steps is None:
        raise ArgenError(
            "no training budget: give each generator --minutes M or --steps N (tokenizers get the same unless "
            "--tokenizer-minutes/--tokenizer-steps), or pass --evaluate-only to measure models already in --out"
        )
    if tokenizer_minutes is None and tokenizer_steps is None:
        tokenizer_minutes, tokenizer_steps = minutes, steps
    evaluation_device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def say(message: str) -> None:
        tqdm.write(f"bench: {message}")

    # 1. The classifier first: it is quick, and data it cannot use (no labels) fails before hours of training.
    classifier_directory = Path(classifier) if classifier else shipped_checkpoint(data, "classifier")
    if classifier_directory is None:
        classifier_directory = out / "classifier"
        if evaluate_only and not (classifier_directory / "config.json").is_file():
            raise ArgenError(
                f"--evaluate-only: no classifier for {data} (none given, none shipped, none in "
                f"{classifier_directory}): pass --classifier DIR or run without --evaluate-only to train one"
            )
        if not evaluate_only:
            from argen.classifier import train_classifier
            from argen.train import TrainingConfig

            say(f"classifier in {classifier_directory}")
            result = train_classifier(
                data,
                training=TrainingConfig(
                    out=str(classifier_directory),
                    steps=classifier_steps,
                    batch_size=CLASSIFIER_BATCH_SIZE,
                    learning_rate=CLASSIFIER_LEARNING_RATE,
                    weight_decay=CLASSIFIER_WEIGHT_DECAY,
                    save_every=SAVE_EVERY,
                    seed=seed,
                    device=device,
                    progress=progress,
                ),
                data_dir=data_dir,
                image_size=image_size,
                channels=channels,
            )
            stopped_by_user(result)
    elif not (classifier_directory / "config.json").is_file():
        raise ArgenError(f"--classifier {classifier_directory} is not a classifier directory (no config.json)")

    # 2. Tokenizers, one per kind the orders need, then 3. one generator per order, all on one recipe.
    if not evaluate_only:
        train_models(
            data, out=out, orders=orders, preset=preset, minutes=minutes, steps=steps,
            tokenizer_minutes=tokenizer_minutes, tokenizer_steps=tokenizer_steps, data_dir=data_dir,
            image_size=image_size, channels=channels, batch_size=batch_size, learning_rate=learning_rate,
            warmup_steps=warmup_steps, tokenizer_width=tokenizer_width, latent_dim=latent_dim,
            codebook_size=codebook_size, seed=seed, device=device, progress=progress, say=say,
        )  # fmt: skip

    # 4. Measurements. The real images' features are computed at most once, and only if something is not cached.
    from argen.commands.sample import sample_to_files
    from argen.evaluate import evaluate_generator, evaluate_tokenizer, load_evaluation_classifier, reference_features

    classifier_model, classifier_accuracy = load_evaluation_classifier(classifier_directory, device=evaluation_device)
    classifier_fingerprint = release_fingerprint(classifier_directory)
    reference_holder: dict = {}

    def reference() -> dict:
        if "features" not in reference_holder:
            say(f"features of the real {REFERENCE_SPLIT} split")
            reference_holder.update(
                reference_features(classifier_model, data, split=REFERENCE_SPLIT, data_dir=data_dir, progress=progress)
            )
        return reference_holder

    shared = {
        "data": data,
        "classifier": classifier_fingerprint,
        "reference_split": REFERENCE_SPLIT,
        "num_images": num_images,
    }
    real = cached(
        out / "eval-real.json",
        "real",
        shared,
        lambda: evaluate_generator(
            classifier=classifier_directory,
            data=data,
            real="test",
            num_images=num_images,
            reference_split=REFERENCE_SPLIT,
            data_dir=data_dir,
            device=evaluation_device,
            reference=reference(),
            progress=progress,
        ),
    )

    rows: dict[str, dict] = {}
    tokenizer_results: dict[str, dict] = {}
    for index, order in enumerate(orders, start=1):
        model_directory = out / order
        generator_fingerprint = release_fingerprint(model_directory / "generator")
        tokenizer_fingerprint = release_fingerprint(model_directory / "tokenizer")
        tokenizer_kind = json.loads((model_directory / "tokenizer" / "config.json").read_text())["config"]["kind"]
        settings = dict(
            shared, generator=generator_fingerprint, cfg_scale=cfg_scale, seed=seed,
            batch_size=evaluation_batch_size, device=evaluation_device,  # speed is measured too
        )  # fmt: skip

        def measure(order=order, model_directory=model_directory, index=index) -> dict:
            say(f"evaluating {order} ({index}/{len(orders)}) on {num_images} images")
            return evaluate_generator(
                classifier=classifier_directory, data=data, model=model_directory, num_images=num_images,
                reference_split=REFERENCE_SPLIT, data_dir=data_dir, batch_size=evaluation_batch_size, seed=seed,
                device=evaluation_device, reference=reference(), progress=progress, cfg_scale=cfg_scale,
            )  # fmt: skip

        measured = cached(model_directory / EVAL_NAME, "generator", settings, measure)

        grid_path, gif_path = out / f"samples-{order}.png", out / f"progress-{order}.gif"

        def draw(order=order, model_directory=model_directory, grid_path=grid_path, gif_path=gif_path) -> dict:
            say(f"sample grid and progress GIF of {order}")
            sample_to_files(
                model_directory, per_label=per_class, grid_path=grid_path, progress_path=gif_path, seed=seed,
                cfg_scale=cfg_scale, device=evaluation_device, verbose=False,
            )  # fmt: skip
            return {"grid": grid_path.name, "progress": gif_path.name}

        pictures = cached(
            model_directory / EVAL_NAME,
            "samples",
            {"generator": generator_fingerprint, "per_class": per_class, "cfg_scale": cfg_scale, "seed": seed},
            draw,
            force=not (grid_path.is_file() and gif_path.is_file()),
        )

        if tokenizer_fingerprint not in tokenizer_results:
            tokenizer_results[tokenizer_fingerprint] = cached(
                model_directory / EVAL_NAME,
                "tokenizer",
                {"data": data, "tokenizer": tokenizer_fingerprint, "limit": num_images},
                lambda model_directory=model_directory: evaluate_tokenizer(
                    model_directory / "tokenizer",
                    data,
                    split="test",
                    data_dir=data_dir,
                    limit=num_images,
                    progress=progress,
                ),
            )
        tokenizer_measured = {
            key: tokenizer_results[tokenizer_fingerprint].get(key)
            for key in ("psnr", "ssim", "codebook_usage", "perplexity", "tokens_per_image")
        }
        rows[order] = {
            **measured,
            "tokenizer_kind": tokenizer_kind,
            "training": training_summary(model_directory),
            "parameters": count_parameters(model_directory / "generator"),
            "tokenizer": tokenizer_measured,
            "samples": pictures["grid"],
            "progress": pictures["progress"],
        }

    if evaluate_only:
        budget = {"evaluate_only": True}
    else:
        budget = {
            "evaluate_only": False, "steps": steps, "minutes": minutes, "tokenizer_steps": tokenizer_steps,
            "tokenizer_minutes": tokenizer_minutes, "batch_size": batch_size, "learning_rate": learning_rate,
            "warmup_steps": warmup_steps, "tokenizer_width": tokenizer_width, "latent_dim": latent_dim,
            "codebook_size": codebook_size, "tokenizer_batch_size": TOKENIZER_BATCH_SIZE,
            "tokenizer_learning_rate": TOKENIZER_LEARNING_RATE,
        }  # fmt: skip
    results = {
        "data": data,
        "command": command,
        "preset": preset,
        "budget": budget,
        "num_images": num_images,
        "cfg_scale": cfg_scale,
        "classifier": str(classifier_directory),
        "classifier_test_accuracy": classifier_accuracy,
        "real": real,
        "orders": rows,
    }
    plot_quality_speed(results, out / "quality-speed.png")
    atomic_write_text(out / "results.md", results_markdown(results))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def train_models(
    data: str,
    *,
    out: Path,
    orders: list[str],
    preset: str,
    minutes: float | None,
    steps: int | None,
    tokenizer_minutes: float | None,
    tokenizer_steps: int | None,
    data_dir: str | None,
    image_size: int | None,
    channels: int | None,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    tokenizer_width: int,
    latent_dim: int,
    codebook_size: int,
    seed: int,
    device: str | None,
    progress: bool,
    say: Callable[[str], None],
) -> None:
    """Train (or resume, or find finished) each tokenizer kind the orders need, then each order's generator."""
    from argen.checkpoint import release_fingerprint
    from argen.tokenizers import TokenizerConfig
    from argen.train import TrainingConfig, train_generator, train_tokenizer

    tokenizer_for = default_tokenizers()
    kinds = list(dict.fromkeys(tokenizer_for[order] for order in orders))
    for index, kind in enumerate(kinds, start=1):
        say(f"tokenizer {kind} ({index}/{len(kinds)}) in {out / 'tokenizers' / kind}")
        result = train_tokenizer(
            data,
            tokenizer=TokenizerConfig(kind=kind, width=tokenizer_width, latent_dim=latent_dim,
                                      codebook_size=codebook_size),
            training=TrainingConfig(
                out=str(out / "tokenizers" / kind), steps=tokenizer_steps, minutes=tokenizer_minutes,
                batch_size=TOKENIZER_BATCH_SIZE, learning_rate=TOKENIZER_LEARNING_RATE, warmup_steps=warmup_steps,
                ema_decay=0.0, save_every=SAVE_EVERY, seed=seed, device=device, progress=progress,
            ),
            data_dir=data_dir,
            image_size=image_size,
            channels=channels,
        )  # fmt: skip
        stopped_by_user(result)
    for index, order in enumerate(orders, start=1):
        tokenizer_directory = out / "tokenizers" / tokenizer_for[order]
        model_directory = out / order
        generator_config = model_directory / "generator" / "config.json"
        if generator_config.is_file():
            # A tokenizer trained further after this generator was made would silently pair the generator with
            # ids it never saw; say so rather than resume.
            trained_on = json.loads(generator_config.read_text()).get("extra", {}).get("tokenizer_fingerprint")
            if trained_on != release_fingerprint(tokenizer_directory):
                raise ArgenError(
                    f"{model_directory} was trained on another state of {tokenizer_directory} (did the tokenizer "
                    f"budget change?): delete {model_directory} to retrain it on the tokenizer as it is now"
                )
        say(f"generator {order} ({index}/{len(orders)}) in {model_directory}")
        result = train_generator(
            str(tokenizer_directory),
            order,
            data,
            training=TrainingConfig(
                out=str(model_directory), steps=steps, minutes=minutes, batch_size=batch_size,
                learning_rate=learning_rate, weight_decay=GENERATOR_WEIGHT_DECAY, warmup_steps=warmup_steps,
                save_every=SAVE_EVERY, seed=seed, device=device, progress=progress,
            ),
            preset=preset,
            data_dir=data_dir,
            # one token cache per tokenizer: raster and neighbor share the vq ids instead of encoding 60 000 images
            # twice (the cache records the tokenizer's fingerprint, so a retrained tokenizer's cache is refused)
            tokens=str(tokenizer_directory / "tokens-train.safetensors"),
        )  # fmt: skip
        stopped_by_user(result)


# ---------------------------------------------------------------------------------------------------------------
# Reports


def format_value(value, pattern: str = "{:.2f}", *, scale: float = 1.0) -> str:
    if value is None:
        return "–"
    return pattern.format(value * scale if scale != 1.0 else value)  # an int stays an int: 30, not 30.0


def results_table(results: dict) -> str:
    """The markdown table of a results.json document: one row per order, then the real test images (the floor)."""
    header = (
        "| order | tokenizer | params | train steps | FID ↓ | KID×1000 ↓ | IS ↑ | precision ↑ | recall ↑ "
        "| class accuracy ↑ | images/s ↑ | forward passes/image ↓ |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def metric_cells(row: dict) -> list[str]:
        kid = format_value(row.get("kid"), scale=1000)
        if row.get("kid_std") is not None:
            kid += f" ± {row['kid_std'] * 1000:.2f}"
        return [
            format_value(row.get("fid")),
            kid,
            format_value(row.get("inception_score")),
            format_value(row.get("precision"), "{:.3f}"),
            format_value(row.get("recall"), "{:.3f}"),
            format_value(row.get("class_accuracy"), "{:.1%}"),
        ]

    for order, row in results["orders"].items():
        training = row.get("training") or {}
        cells = [
            order,
            row.get("tokenizer_kind", "–"),
            format_value(row.get("parameters"), "{:.2f} M", scale=1e-6),
            format_value(training.get("steps"), "{}"),
            *metric_cells(row),
            format_value(row.get("images_per_second"), "{:.1f}"),
            format_value(row.get("forward_passes_per_image"), "{:g}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    real = results.get("real")
    if real:
        lines.append("| " + " | ".join([f"real {real.get('real', 'test')} images", "–", "–", "–",
                                          *metric_cells(real), "–", "–"]) + " |")  # fmt: skip
    return "\n".join(lines)


def tokenizer_table(results: dict) -> str:
    """Reconstruction quality of the tokenizers the orders read (raster and neighbor share one)."""
    by_kind: dict[str, tuple[list[str], dict]] = {}
    for order, row in results["orders"].items():
        measured = row.get("tokenizer")
        if measured:
            by_kind.setdefault(row["tokenizer_kind"], ([], measured))[0].append(order)
    lines = ["| tokenizer | orders | tokens/image | PSNR (dB) | SSIM | codebook usage |", "|---|---|---|---|---|---|"]
    for kind, (orders, measured) in by_kind.items():
        lines.append(
            f"| {kind} | {', '.join(orders)} | {format_value(measured.get('tokens_per_image'), '{}')} | "
            f"{format_value(measured.get('psnr'))} | {format_value(measured.get('ssim'), '{:.3f}')} | "
            f"{format_value(measured.get('codebook_usage'), '{:.1%}')} |"
        )
    return "\n".join(lines)


def results_markdown(results: dict) -> str:
    real = results.get("real") or {}
    reference = real.get("reference", {})
    accuracy = results.get("classifier_test_accuracy")
    lines = [f"# argen bench: {results['data']}", ""]
    if results.get("command"):
        lines += [f"`{results['command']}`", ""]
    lines += [
        f"{results['num_images']} generated images per order (classes balanced, classifier-free guidance "
        f"{results['cfg_scale']}, transformer preset {results['preset']}), scored against the "
        f"{reference.get('images', '?')} images of the {reference.get('split', REFERENCE_SPLIT)} split with the "
        f"features of the classifier in `{results['classifier']}`"
        + (f" (test accuracy {accuracy:.1%})." if accuracy is not None else "."),
        "",
        results_table(results),
        "",
        "Tokenizers on the test split:",
        "",
        tokenizer_table(results),
        "",
        "![quality versus speed](quality-speed.png)",
        "",
    ]
    return "\n".join(lines)


def plot_quality_speed(results: dict, path: Path) -> None:
    """FID against images per second, a labelled point per order, the real images' FID as a dashed floor."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError:
        raise ArgenError("the quality-versus-speed plot needs matplotlib: pip install 'argen[eval]'") from None

    # The object-oriented API with an explicit Agg canvas: no pyplot, so no global backend switch in the caller.
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    points = [
        (row["images_per_second"], row["fid"], order, row.get("forward_passes_per_image"))
        for order, row in results["orders"].items()
        if row.get("images_per_second") is not None and row.get("fid") is not None
    ]
    points.sort()
    speeds, scores = [point[0] for point in points], [point[1] for point in points]
    speed_span = (max(speeds) - min(speeds)) or 1.0
    score_span = (max(scores) - min(scores)) or 1.0
    for rank, (speed, fid, order, passes) in enumerate(points):
        axes.scatter([speed], [fid], s=40, zorder=3)
        # Each label goes on the side away from the nearest other point (below it when that point is higher), and
        # the fastest is labelled on its left, so close points and the right edge do not swallow a name.
        others = [(abs(s - speed) / speed_span + abs(f - fid) / score_span, f) for s, f, *_ in points if s != speed]
        nearest_higher = bool(others) and min(others)[1] > fid
        last = rank == len(points) - 1 and rank > 0
        axes.annotate(
            order if passes is None else f"{order}, {passes:g} passes",
            (speed, fid),
            textcoords="offset points",
            xytext=(-6 if last else 6, -13 if nearest_higher else 5),
            horizontalalignment="right" if last else "left",
        )
    if speeds and max(speeds) > 5 * min(speeds):
        axes.set_xscale("log")  # raster and next-scale differ by about the ratio of their step counts
        axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 10, 20, 50, 100: plain, readable
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
    real_fid = (results.get("real") or {}).get("fid")
    if real_fid is not None:
        axes.axhline(real_fid, linestyle="--", color="grey", linewidth=1, label="real test images (floor)")
        axes.legend(loc="upper right", fontsize="small")
    if speeds:
        axes.set_xlim(min(speeds) / 1.5 if axes.get_xscale() == "log" else 0, max(speeds) * 1.3)
    axes.set_ylim(bottom=0, top=max(scores + [real_fid or 0]) * 1.15 + 1e-9)
    axes.set_xlabel("images per second (sampling, higher is faster)")
    axes.set_ylabel("FID (lower is better)")
    axes.set_title(f"{results['data']}: quality versus speed, preset {results['preset']}, cfg {results['cfg_scale']}")
    axes.grid(True, alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
