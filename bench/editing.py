"""Inpainting with every order: which one fills a hole best? (`argen.editing`, VAR's zero-shot editing.)

    OMP_NUM_THREADS=1 python bench/editing.py --models checkpoints/fashion-mnist --limit 1000

For each order (``--models/ORDER``, an `argen train` model directory), each mask type and each particle count, the
first ``--limit`` Fashion-MNIST test images are edited under their *true* label with `Pipeline.edit` (paste-back on,
the default smooth fill, so nothing under the mask reaches the model), batch b seeded ``--seed`` + b. Masks:

- ``right``: the right half (columns 14-27 of 28);
- ``centre``: the centre square of half the side (7-20 × 7-20);
- ``box``: a random box per image, sides 8-16 pixels, anywhere (seeded by ``--seed``, the same for every order).

Per variant:

- class accuracy: the classifier of ``--classifier`` (the one `argen eval` uses) names the true label;
- FID of the edited images against ``--reference-limit`` real train images, on that classifier's features (as
  `argen eval`); the row "real test images" gives the FID of the unedited test images, the floor at this N;
- PSNR inside the mask against the original (dB; pixels in [0, 1]): how much of the hidden content comes back;
- seam: the mean squared difference of neighbouring pixels across the mask boundary (×1000, pixels in [0, 1]) and
  its ratio to the same on the original images with the same masks: 1 is as smooth as real images, more is a seam.

``--particles 1,4`` also runs sequential Monte Carlo with 4 particles (the remedy for what a causal order cannot
see). Coarse-to-fine orders re-quantize their known tokens against the regenerated coarse cells by default
("requantized"); ``--ablate-known-tokens`` adds a row per such order and mask with VAR's plain rule ("encoded": the
tokens the image encodes to), one particle. Results go to ``--out`` (markdown) and the same path with .json; one
example grid per mask type goes beside them (``editing-MASK.png``: the originals, the masked inputs, then one row
per variant in the table's order), and ``editing-class.png``: class editing (scale and frequency keep the first 1-4
scales / bands of the first test images and regenerate the rest under the next class). PNGs are git-ignored outside
docs/: docs/editing.md shows copies there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from provenance import describe_machine, describe_run, machine_record, start_clock, write_results

from argen.data import image_grid, load_dataset
from argen.metrics.evaluate import classifier_outputs, load_evaluation_classifier, reference_features
from argen.metrics.features import GivenFeatures, _torchmetrics_image
from argen.orders.scale import CoarseToFineOrder
from argen.pipeline import Pipeline
from argen.samplers.forced import can_requantize

ROOT = Path(__file__).resolve().parent.parent
MASKS = ("right", "centre", "box")
ORDERS = ("raster", "scale", "frequency", "neighbor")
EXAMPLES = 8  # images per example grid


def make_masks(kind: str, count: int, height: int, width: int, *, seed: int) -> torch.Tensor:
    """bool (N, H, W), True = regenerate."""
    masks = torch.zeros(count, height, width, dtype=torch.bool)
    if kind == "right":
        masks[:, :, width // 2 :] = True
    elif kind == "centre":
        masks[:, height // 4 : height // 4 + height // 2, width // 4 : width // 4 + width // 2] = True
    elif kind == "box":
        generator = torch.Generator().manual_seed(seed)
        low, high = max(1, min(height, width) * 2 // 7), max(2, min(height, width) * 4 // 7)  # 8-16 on 28
        sides = torch.randint(low, high + 1, (count, 2), generator=generator)
        for index, (box_height, box_width) in enumerate(sides.tolist()):
            top = int(torch.randint(0, height - box_height + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - box_width + 1, (1,), generator=generator))
            masks[index, top : top + box_height, left : left + box_width] = True
    else:
        raise ValueError(f"unknown mask {kind!r}: choose from {', '.join(MASKS)}")
    return masks


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets (N, D), (M, D): torchmetrics' Fréchet distance, as `argen eval` computes it."""
    frechet_class = _torchmetrics_image()[0]
    metric = frechet_class(feature=GivenFeatures(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def psnr_inside(edited: torch.Tensor, original: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over images of the PSNR (dB, pixels in [0, 1]) of the masked pixels; uint8 (N, C, H, W), masks (N, H, W)."""
    difference = (edited.float() - original.float()) / 255
    inside = masks[:, None].expand_as(difference).float()
    mse = (difference.square() * inside).flatten(1).sum(1) / inside.flatten(1).sum(1).clamp_min(1)
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


def seam_energy(images: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean squared difference (pixels in [0, 1]) of horizontal and vertical neighbours on opposite sides of the
    mask boundary, over all such pairs of all images."""
    pixels = images.float() / 255  # (N, C, H, W)
    total, pairs = 0.0, 0
    for dim in (2, 3):
        first, second = pixels.narrow(dim, 0, pixels.shape[dim] - 1), pixels.narrow(dim, 1, pixels.shape[dim] - 1)
        mask_dim = dim - 1
        across = masks.narrow(mask_dim, 0, masks.shape[mask_dim] - 1) != masks.narrow(
            mask_dim, 1, masks.shape[mask_dim] - 1
        )  # (N, H', W')
        energy = (first - second).square().mean(1)  # over channels
        total += float(energy[across].sum())
        pairs += int(across.sum())
    return total / max(pairs, 1)


def labelled_grid(rows: list[torch.Tensor], names: list[str], *, margin: int = 130) -> Image.Image:
    """One grid row per uint8 (N, C, H, W) tensor, its name written to the left."""
    grid = image_grid(torch.cat(rows), columns=rows[0].shape[0]).convert("RGB")
    canvas = Image.new("RGB", (grid.width + margin, grid.height), (0, 0, 0))
    canvas.paste(grid, (margin, 0))
    draw, pitch = ImageDraw.Draw(canvas), (grid.height - 2) / len(rows)
    for index, name in enumerate(names):
        draw.text((4, 2 + index * pitch + pitch / 2 - 6), name, fill=(255, 255, 255))
    return canvas


def class_editing_grid(pipelines: dict[str, Pipeline], images: torch.Tensor, labels: torch.Tensor, *, seed: int):
    """Class editing examples: the coarse-to-fine orders keep the first K scales / bands of each image and regenerate
    the rest under the next class ((label + 1) mod 10: T-shirt → trouser, …, ankle boot → T-shirt), K = 1 … 4.
    (Raster and neighbor would keep the first K tokens or anti-diagonals, not a silhouette.)"""
    targets = (labels + 1) % 10
    rows, names = [images], ["original"]
    for order_name, pipeline in pipelines.items():
        if not isinstance(pipeline.order, CoarseToFineOrder):
            continue
        for keep in (1, 2, 3, 4):
            output = pipeline.edit(images, None, targets, keep_steps=keep, cfg_scale=2.0, seed=seed)
            rows.append(output.pixels.cpu())
            names.append(f"{order_name} keep {keep}")
    return labelled_grid(rows, names)


def edit_all(
    pipeline: Pipeline, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, *, batch: int, seed: int,
    **options,
) -> tuple[torch.Tensor, float]:  # fmt: skip
    """Edited uint8 images (N, C, H, W) in batches seeded seed + b, and the seconds it took."""
    edited, started = [], time.perf_counter()
    for index, start in enumerate(range(0, images.shape[0], batch)):
        chunk = slice(start, start + batch)
        output = pipeline.edit(images[chunk], masks[chunk], labels[chunk], seed=seed + index, **options)
        edited.append(output.pixels.cpu())
    return torch.cat(edited), time.perf_counter() - started


def write_report(
    out: Path, *, arguments, command: str, results: list[dict], baseline: dict, machine: dict, reference_count: int,
    count: int, classifier_accuracy: float | None,
) -> None:  # fmt: skip
    """OUT (the markdown table with its settings line) and OUT.json (settings, machine, every row); prints the table."""
    lines = [
        f"`{command}`",
        "",
        f"{count} Fashion-MNIST test images per row, edited under their true label (cfg {arguments.cfg_scale}, "
        f"top-k {arguments.top_k or 'off'}, fill {arguments.fill}, paste-back on); models in `{arguments.models}`; "
        f"FID against {reference_count} train images on the features of `{arguments.classifier}` (test accuracy "
        f"{classifier_accuracy if classifier_accuracy is None else f'{classifier_accuracy:.1%}'}). "
        f"{describe_machine(machine, arguments.threads)}; {describe_run(machine)}",
        "",
        "| mask | order | particles | known tokens | class accuracy ↑ | FID ↓ | PSNR in mask (dB) ↑ | seam ×1000 "
        "| seam / real ↓ | images/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        lines.append(
            f"| {row['mask']} | {row['order']} | {row['particles']} | {row['known_tokens']} "
            f"| {row['class_accuracy']:.1%} | {row['fid']:.2f} | {row['psnr_inside']:.2f} | {1000 * row['seam']:.1f} "
            f"| {row['seam_ratio']:.2f} "
            f"| {row['images_per_second']:.0f} |"
        )
    lines.append(
        f"| – | real test images (unedited) | – | – | {baseline['class_accuracy']:.1%} | {baseline['fid']:.2f} | – | – "
        "| 1.00 | – |"
    )
    table = "\n".join(lines)
    document = {
        "settings": {**vars(arguments), "command": command},
        "machine": machine,
        "baseline": baseline,
        "results": results,
    }
    write_results(out, table + "\n", document)
    print(table)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="checkpoints/fashion-mnist", help="folder of model directories by order")
    parser.add_argument("--orders", default=",".join(ORDERS))
    parser.add_argument("--masks", default=",".join(MASKS), help="comma-separated: right, centre, box")
    parser.add_argument("--particles", default="1,4", help="comma-separated particle counts (1 = plain forcing)")
    parser.add_argument("--ablate-known-tokens", action="store_true", help="also VAR's plain known tokens (encoded)")
    parser.add_argument("--classifier", default="checkpoints/fashion-mnist/classifier")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--limit", type=int, default=1000, help="test images edited per variant")
    parser.add_argument("--reference-limit", type=int, help="real train images for FID (default: all 60 000)")
    parser.add_argument("--cfg-scale", type=float, default=2.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--fill", choices=("smooth", "keep"), default="smooth")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/editing.md")
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    torch.set_num_threads(arguments.threads)
    command = "OMP_NUM_THREADS=1 python bench/editing.py " + " ".join(sys.argv[1:])
    clock = start_clock()
    out = Path(arguments.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    classifier, classifier_accuracy = load_evaluation_classifier(arguments.classifier)
    reference = reference_features(
        classifier, arguments.data, split="train", data_dir=arguments.data_dir, limit=arguments.reference_limit
    )
    test = load_dataset(arguments.data, split="test", data_dir=arguments.data_dir)
    images, labels = test.images[: arguments.limit], test.labels[: arguments.limit]
    count, _, height, width = images.shape
    real_features, real_logits = classifier_outputs(classifier, images)
    baseline = {
        "fid": frechet_distance(reference["features"], real_features),
        "class_accuracy": float((real_logits.argmax(1) == labels).double().mean()),
    }
    particle_counts = [int(value) for value in arguments.particles.split(",")]
    pipelines = {name: Pipeline.from_pretrained(Path(arguments.models) / name) for name in arguments.orders.split(",")}
    results = []
    for mask_kind in arguments.masks.split(","):
        masks = make_masks(mask_kind, count, height, width, seed=arguments.seed)
        real_seam = seam_energy(images, masks)
        shown = images[:EXAMPLES].clone()
        shown[masks[:EXAMPLES, None].expand_as(shown)] = 128  # the hole as the model's input has it: unknown
        rows, names = [images[:EXAMPLES], shown], ["original", "input (grey: mask)"]
        for order_name, pipeline in pipelines.items():
            requantizable = can_requantize(pipeline.order, pipeline.tokenizer)
            variants = [(particles, "requantized" if requantizable else "encoded") for particles in particle_counts]
            if requantizable and arguments.ablate_known_tokens:
                variants.append((1, "encoded"))
            for particles, known_tokens in variants:
                edited, seconds = edit_all(
                    pipeline, images, masks, labels, batch=max(1, arguments.batch_size // particles),
                    seed=arguments.seed, cfg_scale=arguments.cfg_scale, top_k=arguments.top_k, fill=arguments.fill,
                    particles=particles, known_tokens=known_tokens,
                )  # fmt: skip
                assert torch.equal(edited[~masks[:, None].expand_as(edited)], images[~masks[:, None].expand_as(images)])
                features, logits = classifier_outputs(classifier, edited)
                seam = seam_energy(edited, masks)
                results.append({
                    "mask": mask_kind, "order": order_name, "particles": particles,
                    "known_tokens": known_tokens,
                    "class_accuracy": float((logits.argmax(1) == labels).double().mean()),
                    "fid": frechet_distance(reference["features"], features),
                    "psnr_inside": psnr_inside(edited, images, masks),
                    "seam": seam, "seam_real": real_seam, "seam_ratio": seam / max(real_seam, 1e-12),
                    "images_per_second": count / seconds,
                    "masked_fraction": float(masks.float().mean()),
                })  # fmt: skip
                rows.append(edited[:EXAMPLES])
                names.append(
                    f"{order_name} P={particles}" + (" encoded" if requantizable and known_tokens == "encoded" else "")
                )
                row = results[-1]
                print(
                    f"{mask_kind} {order_name} P={particles} {known_tokens}: accuracy {row['class_accuracy']:.3f}, "
                    f"FID {row['fid']:.2f}, PSNR in mask {row['psnr_inside']:.2f} dB, seam ×{row['seam_ratio']:.2f}",
                    file=sys.stderr,
                )
        labelled_grid(rows, names).save(out.parent / f"{out.stem}-{mask_kind}.png")

    class_editing_grid(pipelines, images[:EXAMPLES], labels[:EXAMPLES], seed=arguments.seed).save(
        out.parent / f"{out.stem}-class.png"
    )
    machine = machine_record(**clock, threads=arguments.threads)
    write_report(
        out, arguments=arguments, command=command, results=results, baseline=baseline, machine=machine,
        reference_count=reference["images"], count=count, classifier_accuracy=classifier_accuracy,
    )  # fmt: skip


if __name__ == "__main__":
    main()
