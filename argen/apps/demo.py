"""`argen demo`: the shipped Fashion-MNIST pipelines of every order on one page, made in under a minute on a CPU.

For each order found under the checkpoints directory (``checkpoints/fashion-mnist/<order>/`` by default) it samples
a grid with one row per class and a GIF of the image after every step of the order's schedule, times plain
sampling of the same batch (images/s and forward passes per image, measured now on this machine), and, when the
shipped classifier is there, says how many of these samples it recognises as the class asked for. The quality
columns (FID, KID, IS, precision, recall, class accuracy on 10 000 samples) are not recomputed, which would take
minutes: they are read from the ``results.json`` that `argen bench --evaluate-only` wrote beside the checkpoints,
and the page shows the command that produced them.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from argen.checkpoint import atomic_write_text, shipped_checkpoint
from argen.errors import ArgenError
from argen.orders import ORDERS


def find_checkpoints(checkpoints: str | Path | None, data: str) -> Path:
    if checkpoints is not None:
        root = Path(checkpoints)
        if not root.is_dir():
            raise ArgenError(f"{root} does not exist: pass the folder holding <order>/ model directories")
        return root
    root = shipped_checkpoint(data)
    if root is None:
        raise ArgenError(
            f"no shipped checkpoints for {data} (looked for checkpoints/{data}/ here and beside the package): "
            "run from a clone of the repository or pass --checkpoints DIR"
        )
    return root


def labelled(image: Image.Image, caption: str, *, scale: int) -> Image.Image:
    """``image`` enlarged ``scale``× (nearest neighbour, to keep pixels sharp) under a line of caption text."""
    enlarged = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (enlarged.width, enlarged.height + 18), "white")
    canvas.paste(enlarged, (0, 18))
    ImageDraw.Draw(canvas).text((4, 3), caption, fill="black")
    return canvas


def side_by_side(images: list[Image.Image], *, gap: int = 12) -> Image.Image:
    width = sum(image.width for image in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(image.height for image in images)), "white")
    left = 0
    for image in images:
        canvas.paste(image, (left, 0))
        left += image.width + gap
    return canvas


def format_number(value, digits: int = 2, *, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def run_demo(
    *,
    checkpoints: str | Path | None = None,
    data: str = "fashion-mnist",
    out: str | Path = "demo",
    per_class: int = 4,
    seed: int = 0,
    cfg_scale: float | None = None,
    progress: bool = True,
) -> dict:
    """Write OUT/index.html (+ a grid PNG and a GIF per order, OUT/demo.png with all grids, OUT/demo.json)."""
    from tqdm.auto import tqdm

    from argen.apps.sampling_files import sample_to_files
    from argen.data import image_grid
    from argen.metrics.evaluate import classifier_outputs, load_evaluation_classifier
    from argen.pipeline import Pipeline

    started = time.perf_counter()
    root = find_checkpoints(checkpoints, data)
    orders = [order for order in ORDERS if (root / order / "generator" / "config.json").is_file()]
    if not orders:
        raise ArgenError(f"{root} holds no model directory named {', '.join(ORDERS)}: nothing to show")
    measured = json.loads((root / "results.json").read_text()) if (root / "results.json").is_file() else None
    classifier = None
    if (root / "classifier" / "config.json").is_file():
        classifier, _ = load_evaluation_classifier(root / "classifier")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, grids = [], []
    for order in tqdm(orders, desc="demo", unit="order", disable=not progress):
        grid_path, gif_path = out / f"samples-{order}.png", out / f"progress-{order}.gif"
        result = sample_to_files(
            root / order, per_label=per_class, grid_path=grid_path, progress_path=gif_path, seed=seed,
            cfg_scale=cfg_scale, verbose=False,
        )  # fmt: skip
        pipeline = Pipeline.from_pretrained(root / order)
        labels = result.labels
        pipeline(labels[:2] if labels is not None else None, num_images=None if labels is not None else 2)  # warm-up
        timer = time.perf_counter()
        timed = pipeline(labels, num_images=None if labels is not None else per_class, seed=seed, cfg_scale=cfg_scale)
        seconds = time.perf_counter() - timer
        count = timed.pixels.shape[0]
        row = {
            "order": order,
            "paper": ORDERS[order].summary(),
            "parameters": sum(parameter.numel() for parameter in pipeline.model.parameters()),
            "steps": timed.forward_passes,
            "images_per_second": count / seconds,
            "images_timed": count,
            "sampling": pipeline.sampling_settings(cfg_scale=cfg_scale),
            "grid": grid_path.name,
            "progress": gif_path.name,
        }
        if classifier is not None and labels is not None and classifier.config.image_size == timed.pixels.shape[-1]:
            _, logits = classifier_outputs(classifier, result.pixels)
            row["demo_class_accuracy"] = float((logits.argmax(1) == labels).double().mean())
        row["measured"] = (measured or {}).get("orders", {}).get(order)
        rows.append(row)
        grids.append(labelled(image_grid(result.pixels, columns=per_class), order, scale=2))
    side_by_side(grids).save(out / "demo.png")
    summary = {
        "checkpoints": str(root),
        "cfg_scale": cfg_scale,
        "seed": seed,
        "orders": rows,
        "measured_command": (measured or {}).get("command"),
        "real": (measured or {}).get("real"),
        "seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
    }
    atomic_write_text(out / "demo.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "index.html", render_page(summary, classes=pipeline.classes))
    return summary


def render_page(summary: dict, *, classes: list[str]) -> str:
    """One self-contained HTML page (images beside it in the same folder)."""
    escape = html.escape
    live_rows, quality_rows, sections = [], [], []
    for row in summary["orders"]:
        recognised = row.get("demo_class_accuracy")
        live_rows.append(
            f"<tr><td>{escape(row['order'])}</td><td>{escape(row['paper'])}</td>"
            f"<td>{row['parameters'] / 1e6:.2f} M</td><td>{row['steps']}</td><td>{row['images_per_second']:.1f}</td>"
            f"<td>{format_number(recognised, 0, scale=100)}{'' if recognised is None else ' %'}</td></tr>"
        )
        measured = row["measured"]
        if measured:
            quality_rows.append(quality_row(row["order"], measured))
        sections.append(
            f"<section><h2>{escape(row['order'])}: {escape(row['paper'])}</h2>"
            f'<div class="pair"><figure><img src="{escape(row["grid"])}" alt="{escape(row["order"])} samples">'
            "<figcaption>samples, one row per class</figcaption></figure>"
            f'<figure><img src="{escape(row["progress"])}" alt="{escape(row["order"])} step by step">'
            f"<figcaption>the image after each of the {row['steps']} steps</figcaption></figure></div></section>"
        )
    if summary.get("real"):
        quality_rows.append(quality_row("real test images (floor)", summary["real"]))
    quality = (
        "<h2>Quality (measured offline)</h2>"
        f"<p>Produced by <code>{escape(summary['measured_command'] or 'argen bench')}</code>; features and class "
        "accuracy from argen's own Fashion-MNIST classifier, against the train split. Its images/s were measured "
        "by that run, sampling all its images in large batches at another time and load: the speed table above "
        "times this page's own batch now, so the two figures for one model differ.</p>"
        "<table><tr><th>order</th><th>images</th><th>FID ↓</th><th>KID×1000 ↓</th><th>IS ↑</th><th>precision ↑</th>"
        "<th>recall ↑</th><th>class accuracy ↑</th><th>images/s</th></tr>" + "".join(quality_rows) + "</table>"
        if quality_rows
        else "<p>No results.json beside the checkpoints: run <code>argen bench --evaluate-only</code> to measure "
        "FID, KID, IS, precision/recall and class accuracy.</p>"
    )
    rows_text = "".join(live_rows)
    threads = f"{summary['threads']} thread" + ("" if summary["threads"] == 1 else "s")
    class_list = escape(", ".join(f"{index} {name}" for index, name in enumerate(classes)))
    settings = [
        f"{row['order']}: guidance {row['sampling']['cfg_scale']}, top-k {row['sampling']['top_k'] or 'all'}"
        for row in summary["orders"]
        if "sampling" in row
    ]
    guidance = "each model's recommended sampling settings — " + "; ".join(settings) if settings else "default settings"

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>argen demo</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; }}
img {{ image-rendering: pixelated; width: 280px; }} .pair {{ display: flex; gap: 2em; }}
figure {{ margin: 0; }} figcaption {{ font-size: 90%; color: #555; }} code {{ background: #f3f3f3; }}
</style></head><body>
<h1>argen: four generation orders on one tokenizer stack</h1>
<p>Class-conditional Fashion-MNIST samples ({guidance}, seed {summary["seed"]})
from the shipped checkpoints in <code>{escape(summary["checkpoints"])}</code>. Rows are classes: {class_list}.</p>
<h2>Speed (measured now, on this machine)</h2>
<table><tr><th>order</th><th>method</th><th>transformer</th><th>forward passes / image</th><th>images/s</th>
<th>classified as asked (these samples)</th></tr>{rows_text}</table>
{quality}
{"".join(sections)}
<p>Made by <code>argen demo</code> in {summary["seconds"]:.1f} s with {threads}.</p>
</body></html>
"""


def quality_row(name: str, measured: dict) -> str:
    accuracy = measured.get("class_accuracy")
    return (
        f"<tr><td>{html.escape(name)}</td><td>{measured.get('images', '–')}</td>"
        f"<td>{format_number(measured.get('fid'))}</td><td>{format_number(measured.get('kid'), scale=1000)}</td>"
        f"<td>{format_number(measured.get('inception_score'))}</td><td>{format_number(measured.get('precision'))}</td>"
        f"<td>{format_number(measured.get('recall'))}</td>"
        f"<td>{format_number(accuracy, 1, scale=100)}{'' if accuracy is None else ' %'}</td>"
        f"<td>{format_number(measured.get('images_per_second'), 1)}</td></tr>"
    )
