"""argen compress against PNG, WebP and JPEG on Fashion-MNIST (and digits the models never saw); writes the docs
table, a JSON of every number, the rate-distortion plot and the progressive-decoding picture.

    python bench/compression.py                                  # all four shipped orders, all 10 000 test images
    python bench/compression.py --limit 200 --orders scale       # a quick run
    python bench/compression.py --models runs/fashion-mnist      # other model directories (ORDER subfolders)

Per order (model directory ``MODELS/ORDER``):

- lossy: bits per pixel of the .argz file (header included) and PSNR of the decoded images against the originals,
  for both class priors; the model's NLL against the streams' size; encode and decode images/s; every decode is
  checked to equal the tokenizer's reconstruction of the encoded ids. Scale and frequency models also give the
  progressive points: the file cut after step K, decoded with ``steps=K``.
- lossless (when ``MODELS/ORDER/residual`` exists; `argen train-residual` makes it): bits per dimension, NLL
  against size, speeds, and a byte-for-byte check of every image.
- baselines, one file per image as a user would store them: PNG (optimize, compress_level 9), WebP lossless
  (method 6), and JPEG / WebP lossy swept over quality; their PSNR is interpolated at argen's lossy rates.
- out of distribution: the same on MNIST digits when their IDX files are found (`argen data-info --data mnist`
  downloads them), else on digits rendered from the DejaVu fonts at random sizes, slants and offsets (labelled as
  such, not as MNIST).

Speeds are wall-clock on whatever machine runs this, one process; docs/compression.md states the machine.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from argen.codec import Codec, unpack  # noqa: E402
from argen.data import float_to_images, images_to_float, load_dataset  # noqa: E402
from argen.metrics import psnr  # noqa: E402

ORDERS = ("raster", "scale", "frequency", "neighbor")
JPEG_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
FONT_DIRECTORY = Path("/usr/share/fonts/truetype/dejavu")


# ---------------------------------------------------------------------------------------------------------------
# Data


def rendered_digits(count: int, *, size: int = 28, seed: int = 0) -> torch.Tensor:
    """White digits on black, MNIST-like in layout only: DejaVu fonts, random size, slant and offset."""
    fonts = sorted(FONT_DIRECTORY.glob("*.ttf"))
    if not fonts:
        raise SystemExit(f"no fonts under {FONT_DIRECTORY} for the rendered-digit OOD set: pass --ood none")
    generator = np.random.default_rng(seed)
    images = np.zeros((count, 1, size, size), dtype=np.uint8)
    for index in range(count):
        canvas = Image.new("L", (size * 2, size * 2), 0)
        font = ImageFont.truetype(str(fonts[generator.integers(len(fonts))]), int(generator.integers(28, 40)))
        draw = ImageDraw.Draw(canvas)
        draw.text((size, size), str(generator.integers(10)), fill=255, font=font, anchor="mm")
        canvas = canvas.rotate(float(generator.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)
        shift = generator.integers(-3, 4, size=2)
        box = (size // 2 + shift[0], size // 2 + shift[1], size // 2 + shift[0] + size, size // 2 + shift[1] + size)
        images[index, 0] = np.asarray(canvas.crop(tuple(int(v) for v in box)))
    return torch.from_numpy(images)


def out_of_distribution(kind: str, count: int, data_dir: str | None) -> tuple[str, torch.Tensor] | None:
    if kind == "none":
        return None
    if kind in ("auto", "mnist"):
        try:
            dataset = load_dataset("mnist", split="test", data_dir=data_dir, download=kind == "mnist", progress=False)
            return "MNIST test digits", dataset.images[:count]
        except Exception as error:  # no local IDX files (and no download): say so, fall back
            if kind == "mnist":
                raise
            print(f"MNIST not available ({str(error).splitlines()[0]}); using rendered digits", flush=True)
    return "digits rendered from DejaVu fonts (not MNIST)", rendered_digits(count)


# ---------------------------------------------------------------------------------------------------------------
# Baselines


def encoded_size(image: np.ndarray, **options) -> tuple[int, np.ndarray]:
    stream = io.BytesIO()
    Image.fromarray(image).save(stream, **options)
    data = stream.getvalue()
    return len(data), np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def baselines(images: torch.Tensor) -> dict:
    """PNG / WebP lossless bits per dim, and JPEG / WebP lossy (bpp, PSNR) curves, one file per image."""
    arrays = images[:, 0].numpy()
    pixels = arrays[0].size
    result = {}
    for name, options in (
        ("png", {"format": "PNG", "optimize": True, "compress_level": 9}),
        ("webp_lossless", {"format": "WEBP", "lossless": True, "quality": 100, "method": 6}),
    ):
        sizes = [encoded_size(array, **options)[0] for array in arrays]
        result[name] = {"bits_per_dim": 8 * float(np.mean(sizes)) / pixels}
    for name, qualities, options in (
        ("jpeg", JPEG_QUALITIES, {"format": "JPEG", "optimize": True}),
        ("webp", WEBP_QUALITIES, {"format": "WEBP", "method": 6}),
    ):
        curve = []
        for quality in qualities:
            sizes, decoded = zip(*(encoded_size(array, quality=quality, **options) for array in arrays))
            decoded = torch.from_numpy(np.stack(decoded))[:, None]
            quality_psnr = float(psnr(images_to_float(decoded), images_to_float(images)))
            curve.append({"quality": quality, "bpp": 8 * float(np.mean(sizes)) / pixels, "psnr": quality_psnr})
        result[name] = curve
    return result


def psnr_at(curve: list[dict], bpp: float) -> float | None:
    """A baseline's PSNR at ``bpp`` by linear interpolation of its sweep; None outside the swept rates."""
    points = sorted((point["bpp"], point["psnr"]) for point in curve)
    for (low_bpp, low_psnr), (high_bpp, high_psnr) in zip(points, points[1:]):
        if low_bpp <= bpp <= high_bpp:
            return low_psnr + (high_psnr - low_psnr) * (bpp - low_bpp) / max(high_bpp - low_bpp, 1e-12)
    return None


def bpp_at(curve: list[dict], quality: float) -> float | None:
    """A baseline's bits per pixel at PSNR ``quality`` by linear interpolation; None outside the sweep."""
    points = sorted((point["psnr"], point["bpp"]) for point in curve)
    for (low_psnr, low_bpp), (high_psnr, high_bpp) in zip(points, points[1:]):
        if low_psnr <= quality <= high_psnr:
            return low_bpp + (high_bpp - low_bpp) * (quality - low_psnr) / max(high_psnr - low_psnr, 1e-12)
    return None


# ---------------------------------------------------------------------------------------------------------------
# argen


def measure_order(
    directory: Path, images: torch.Tensor, *, block_size: int, lossless: bool, progressive_limit: int
) -> dict:
    codec = Codec(directory)
    count, pixels = len(images), images[0].numel()
    ids = []
    for start in range(0, count, block_size):
        ids.append(codec.tokenizer.encode(images_to_float(images[start : start + block_size])))
    reconstruction = torch.cat(
        [float_to_images(codec.tokenizer.decode(block)) for block in ids]
    )  # what lossy decoding must give
    result: dict = {"order": codec.order.name, "directory": str(directory)}
    classes = None  # the uniform-prior run's class choice, reused by the lossless run (same tokens, same search)
    for prior in ("uniform", "null") if codec.num_classes else ("uniform",):
        data, report = codec.compress(images, class_prior=prior, block_size=block_size, progress=False)
        if prior == "uniform":
            classes = report.classes
        start = time.perf_counter()
        decoded = codec.decompress(data, progress=False)
        decode_seconds = time.perf_counter() - start
        entry = {
            "bpp": 8 * len(data) / (count * pixels),
            "psnr": float(psnr(images_to_float(decoded.pixels), images_to_float(images))),
            "equals_reconstruction": bool(torch.equal(decoded.pixels, reconstruction)),
            "model_nll_bytes": sum(report.model_bits.values()) / 8,
            "stream_bytes": sum(report.stream_bytes),
            "header_bytes": report.header_bytes,
            "overhead_percent": 100 * (8 * sum(report.stream_bytes) / sum(report.model_bits.values()) - 1),
            "encode_images_per_second": report.images_per_second,
            "decode_images_per_second": count / decode_seconds,
        }
        result[f"lossy_{prior}"] = entry
        if prior == "uniform" and codec.progressive:
            # Each prefix decode replays the schedule up to its step, so on the first ``progressive_limit`` images
            # only (coded again on their own, under the classes the search chose for them).
            subset, prefixed = images[:progressive_limit], data
            if len(subset) < count:
                chosen = None if classes is None else classes[: len(subset)]
                prefixed, _ = codec.compress(subset, block_size=block_size, progress=False, classes=chosen)
            header, streams = unpack(prefixed)
            head = len(prefixed) - sum(len(stream) for stream in streams)
            points = []
            for steps in range(1, codec.layout.num_steps + 1):
                prefix = prefixed[: head + sum(len(stream) for stream in streams[:steps])]
                coarse = codec.decompress(prefix, steps=steps, progress=False)
                points.append(
                    {
                        "steps": steps,
                        "images": len(subset),
                        "bpp": 8 * len(prefix) / (len(subset) * pixels),
                        "psnr": float(psnr(images_to_float(coarse.pixels), images_to_float(subset))),
                    }
                )
            result["progressive"] = points
    if lossless and (directory / "residual" / "config.json").is_file():
        data, report = codec.compress(images, lossless=True, block_size=block_size, progress=False, classes=classes)
        start = time.perf_counter()
        decoded = codec.decompress(data, progress=False)
        decode_seconds = time.perf_counter() - start
        model_bits = sum(report.model_bits.values())
        result["lossless"] = {
            "bits_per_dim": 8 * len(data) / (count * pixels),
            "exact": bool(torch.equal(decoded.pixels, images)),
            "model_nll_bits_per_dim": model_bits / (count * pixels),
            "token_bits_per_dim": report.model_bits["tokens"] / (count * pixels),
            "residual_bits_per_dim": report.model_bits["residual"] / (count * pixels),
            "overhead_percent": 100 * (8 * sum(report.stream_bytes) / model_bits - 1),
            "header_bytes": report.header_bytes,
            "encode_images_per_second": report.images_per_second,
            "decode_images_per_second": count / decode_seconds,
        }
    return result


def progressive_picture(directory: Path, images: torch.Tensor, path: Path, *, count: int = 6) -> None:
    """Rows of test images: original, then the decode of the first 1..S steps (scale or frequency model)."""
    from argen.data import image_grid

    codec = Codec(directory)
    sample = images[:count]
    data, _ = codec.compress(sample, progress=False)
    columns = [sample] + [
        codec.decompress(data, steps=k, progress=False).pixels for k in range(1, codec.layout.num_steps + 1)
    ]
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # (count · (S + 1), C, H, W), one row per image
    image_grid(grid, columns=len(columns)).resize(
        (len(columns) * 30 * 3, count * 30 * 3), Image.Resampling.NEAREST
    ).save(path)


# ---------------------------------------------------------------------------------------------------------------
# Report


def table(results: dict, name: str) -> list[str]:
    base = results["baselines"]
    lines = [f"### {name} ({results['count']} images)", ""]
    lines.append(
        f"Lossless, bits per dimension: PNG {base['png']['bits_per_dim']:.3f}, WebP lossless "
        f"{base['webp_lossless']['bits_per_dim']:.3f} (one file per image)."
    )
    lines += [
        "",
        "| order | lossless bits/dim | NLL bits/dim | tokens + residual | size − NLL | exact | enc / dec img/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for order in results["orders"]:
        entry = order.get("lossless")
        if entry is None:
            lines.append(f"| {order['order']} | no residual model | | | | | |")
            continue
        lines.append(
            f"| {order['order']} | **{entry['bits_per_dim']:.3f}** | {entry['model_nll_bits_per_dim']:.3f} | "
            f"{entry['token_bits_per_dim']:.3f} + {entry['residual_bits_per_dim']:.3f} | "
            f"{entry['overhead_percent']:+.2f} % (+{entry['header_bytes']} B header) | {entry['exact']} | "
            f"{entry['encode_images_per_second']:.0f} / {entry['decode_images_per_second']:.0f} |"
        )
    lines += [
        "",
        "The lossless runs code each image under the class the lossy uniform-prior run chose (the same search on the "
        "same tokens, so the same file); their encode img/s therefore leaves the per-class search out, which the "
        "lossy encode img/s includes.",
        "",
        "| order | lossy bpp (uniform / null class) | PSNR dB | JPEG / WebP PSNR at that bpp | JPEG / WebP bpp at that "
        "PSNR | size − NLL | = reconstruction | enc / dec img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for order in results["orders"]:
        uniform, null = order["lossy_uniform"], order.get("lossy_null")
        at_rate = [psnr_at(base[name], uniform["bpp"]) for name in ("jpeg", "webp")]
        at_quality = [bpp_at(base[name], uniform["psnr"]) for name in ("jpeg", "webp")]
        rate_text = " / ".join("—" if value is None else f"{value:.2f}" for value in at_rate)
        quality_text = " / ".join("—" if value is None else f"{value:.2f}" for value in at_quality)
        null_text = f" / {null['bpp']:.3f}" if null else ""
        lines.append(
            f"| {order['order']} | {uniform['bpp']:.3f}{null_text} | {uniform['psnr']:.2f} | {rate_text} | "
            f"{quality_text} | {uniform['overhead_percent']:+.2f} % | {uniform['equals_reconstruction']} | "
            f"{uniform['encode_images_per_second']:.0f} / {uniform['decode_images_per_second']:.0f} |"
        )
    lowest = {name: min(point["bpp"] for point in base[name]) for name in ("jpeg", "webp")}
    lines += [
        "",
        f"— : outside the swept range. Lowest rates reached: JPEG {lowest['jpeg']:.2f} bpp (quality "
        f"{JPEG_QUALITIES[0]}), WebP {lowest['webp']:.2f} bpp (quality {WEBP_QUALITIES[0]}), one file per image.",
        "",
    ]
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    base = results["in_distribution"]["baselines"]
    for name, style in (("jpeg", "s-"), ("webp", "^-")):
        points = sorted((point["bpp"], point["psnr"]) for point in base[name])
        axis.plot(*zip(*points), style, label=name.upper(), color="grey" if name == "jpeg" else "silver")
    for order in results["in_distribution"]["orders"]:
        if "progressive" in order:
            points = [(point["bpp"], point["psnr"]) for point in order["progressive"]]
            axis.plot(*zip(*points), "o-", label=f"argen {order['order']} (progressive prefixes)")
        else:
            axis.plot(
                order["lossy_uniform"]["bpp"], order["lossy_uniform"]["psnr"], "D", label=f"argen {order['order']}"
            )
    axis.set_xscale("log")
    axis.set_xlabel("bits per pixel (whole files, log scale)")
    axis.set_ylabel("PSNR (dB)")
    axis.set_title(f"Fashion-MNIST test, {results['in_distribution']['count']} images")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def write_report(results: dict, lines: list[str], arguments: argparse.Namespace) -> None:
    """OUT.json, OUT.md (also printed) and the rate-distortion plot unless --plot is ''."""
    out = Path(arguments.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if arguments.plot:
        plot(results, Path(arguments.plot))
        print(f"plot: {arguments.plot}")


def merge(arguments: argparse.Namespace) -> None:
    """One report from runs that split the orders between processes (``--orders raster,scale`` in one, ``--orders
    frequency,neighbor`` in another): the same images, so the baselines agree and the orders are concatenated."""
    parts = [json.loads(Path(path).read_text()) for path in arguments.merge]
    results = {**parts[0], "argv": [part["argv"] for part in parts]}
    lines = ["## argen compress: results", ""]
    for key in ("in_distribution", "out_of_distribution"):
        entries = [part[key] for part in parts if key in part]
        if not entries:
            continue
        if any((entry["name"], entry["count"]) != (entries[0]["name"], entries[0]["count"]) for entry in entries):
            raise SystemExit(f"--merge: the {key} sets differ between the files (other images or counts)")
        results[key] = {**entries[0], "orders": [order for entry in entries for order in entry["orders"]]}
        lines += table(results[key], results[key]["name"])
    write_report(results, lines, arguments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=str(ROOT / "checkpoints" / "fashion-mnist"), help="folder of ORDER dirs")
    parser.add_argument("--orders", default=",".join(ORDERS))
    parser.add_argument("--limit", type=int, default=10000, help="test images to use")
    parser.add_argument("--ood-limit", type=int, help="out-of-distribution images to use (default: --limit)")
    parser.add_argument(
        "--progressive-limit", type=int, default=1000, help="images the progressive (prefix) points are measured on"
    )
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--ood", choices=("auto", "mnist", "digits", "none"), default="auto")
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--no-lossless", action="store_true", help="skip lossless mode")
    parser.add_argument(
        "--pc-bpd",
        type=float,
        help="a probabilistic circuit's Fashion-MNIST test bits/dim to print under the table (3.34: HCLT, docs)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the numbers the docs report)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "compression"), help="OUT.md / OUT.json")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "compression-rate-distortion.png"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "compression-progressive.png"),
                        help="progressive decoding picture (frequency model); '' skips it")  # fmt: skip
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="only write the tables and the plot of these results files (runs over other --orders, same images)",
    )
    arguments = parser.parse_args()
    if arguments.merge:
        return merge(arguments)
    torch.set_num_threads(arguments.threads)
    models = Path(arguments.models)
    orders = [name for name in arguments.orders.split(",") if name]
    images = load_dataset(arguments.data, split="test", data_dir=arguments.data_dir, progress=False).images
    images = images[: arguments.limit]
    sets = [("in_distribution", f"{arguments.data} test", images)]
    ood_count = len(images) if arguments.ood_limit is None else arguments.ood_limit
    ood = out_of_distribution(arguments.ood, ood_count, arguments.data_dir)
    if ood is not None:
        sets.append(("out_of_distribution", ood[0], ood[1]))
    results: dict = {"argv": sys.argv[1:], "threads": arguments.threads, "torch": torch.__version__}
    lines = ["## argen compress: results", ""]
    for key, name, pixels in sets:
        print(f"{name}: {len(pixels)} images", flush=True)
        entry = {"name": name, "count": len(pixels), "baselines": baselines(pixels), "orders": []}
        for order in orders:
            print(f"  {order}", flush=True)
            entry["orders"].append(
                measure_order(
                    models / order,
                    pixels,
                    block_size=arguments.block_size,
                    lossless=not arguments.no_lossless,
                    progressive_limit=arguments.progressive_limit,
                )
            )
        results[key] = entry
        lines += table(entry, name)
        if key == "in_distribution" and arguments.pc_bpd is not None:
            lines += [
                f"Probabilistic circuit (HCLT, the structure of Liu, Mandt, Van den Broeck, arXiv 2111.11632) as "
                f"reported in Dang, Liu, Van den Broeck, NeurIPS 2022, Table 1: {arguments.pc_bpd} bits/dim "
                "(test NLL, an ideal code length, not a file).",
                "",
            ]
    write_report(results, lines, arguments)
    progressive = next((order for order in ("frequency", "scale") if order in orders), None)
    if arguments.picture and progressive:
        progressive_picture(models / progressive, images, Path(arguments.picture))
        print(f"picture: {arguments.picture}")
    bad = [
        order["order"]
        for entry in (results[key] for key, _, _ in sets)
        for order in entry["orders"]
        if not order["lossy_uniform"]["equals_reconstruction"] or not order.get("lossless", {}).get("exact", True)
    ]
    if bad:
        raise SystemExit(f"round trip FAILED for {', '.join(bad)}")


if __name__ == "__main__":
    main()
