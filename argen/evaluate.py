"""Offline evaluation behind `argen eval-tokenizer` (and, later, `argen eval`): numbers plus a picture to look at."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from argen.checkpoint import atomic_write_text
from argen.data import float_to_images, image_grid, images_to_float, load_dataset
from argen.errors import ArgenError
from argen.metrics import codebook_statistics, psnr


def torchmetrics_ssim():
    """torchmetrics' SSIM, from the `eval` extra, with a clear message when it is not installed."""
    try:
        from torchmetrics.image import StructuralSimilarityIndexMeasure
    except ImportError:
        raise ArgenError("this command needs torchmetrics: pip install 'argen[eval]'") from None
    return StructuralSimilarityIndexMeasure(data_range=1.0)


@torch.no_grad()
def evaluate_tokenizer(
    directory: str | Path,
    data: str,
    *,
    split: str = "test",
    data_dir: str | None = None,
    batch_size: int = 250,
    limit: int | None = None,
    json_path: str | Path | None = None,
    image_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Reconstruction quality and codebook health of a trained tokenizer on one split.

    PSNR is per image then averaged; SSIM is torchmetrics' Gaussian SSIM on [0, 1] images. Codebook usage is the
    fraction of codes that appear anywhere in the split's ids, perplexity is exp(entropy) of their histogram.
    Bits per image are given twice: nominal (tokens × log2 K, what a plain id array costs) and at the empirical
    entropy of the ids (what an order-0 entropy coder would need; the generator as entropy model does better).
    """
    from argen.tokenizers import load_tokenizer

    tokenizer, _ = load_tokenizer(directory)
    config = tokenizer.config
    dataset = load_dataset(data, split=split, data_dir=data_dir, image_size=config.image_size, channels=config.channels)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    ssim_metric = torchmetrics_ssim()
    psnr_total, all_ids = 0.0, []
    for start in tqdm(range(0, count, batch_size), desc="eval-tokenizer", unit="batch", disable=not progress):
        images = images_to_float(dataset.images[start : min(start + batch_size, count)])
        ids = tokenizer.encode(images)
        reconstruction = tokenizer.decode(ids).clamp(-1, 1)
        psnr_total += float(psnr(reconstruction, images)) * images.shape[0]
        ssim_metric.update((reconstruction + 1) / 2, (images + 1) / 2)
        all_ids.append(ids)
    grids = [torch.cat([batch[index] for batch in all_ids]) for index in range(len(all_ids[0]))]
    statistics = codebook_statistics(grids, tokenizer.codebook_size)
    tokens_per_image = sum(height * width for height, width in tokenizer.grid_shapes)
    histogram = torch.bincount(torch.cat([grid.flatten() for grid in grids]), minlength=tokenizer.codebook_size)
    probabilities = histogram[histogram > 0].double() / histogram.sum()
    entropy_bits = float(-(probabilities * probabilities.log2()).sum())
    results = {
        "tokenizer": str(directory),
        "kind": config.kind,
        "data": data,
        "split": split,
        "images": count,
        "psnr": psnr_total / count,
        "ssim": float(ssim_metric.compute()),
        "codebook_size": tokenizer.codebook_size,
        "codebook_usage": statistics["usage"],
        "perplexity": statistics["perplexity"],
        "tokens_per_image": tokens_per_image,
        "bits_per_image_nominal": tokens_per_image * math.log2(tokenizer.codebook_size),
        "bits_per_image_entropy": tokens_per_image * entropy_bits,
    }
    if json_path:
        atomic_write_text(json_path, json.dumps(results, indent=2) + "\n")
    if image_path:
        shown = min(16, count)
        originals = dataset.images[:shown]
        reconstructions = float_to_images(tokenizer.decode(tokenizer.encode(images_to_float(originals))))
        image_grid(torch.cat([originals, reconstructions]), columns=shown).save(image_path)
    return results
