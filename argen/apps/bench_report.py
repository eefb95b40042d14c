"""The reports of `argen bench`: markdown tables of a results.json document and the quality-versus-speed plot."""

from __future__ import annotations

from pathlib import Path

from argen.errors import ArgenError, install_hint

REFERENCE_SPLIT = "train"  # the real split generated images are scored against


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
        raise ArgenError(f"the quality-versus-speed plot needs matplotlib: {install_hint('eval')}") from None

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
