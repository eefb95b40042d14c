"""The sequences activations are captured on: training images encoded by the model's tokenizer, or the model's own
samples (their ids, fed back teacher-forced). Both give ids (one (N, h, w) grid per tokenizer grid) and labels."""

from __future__ import annotations

import torch
from torch import Tensor

from argen.errors import ArgenError
from argen.pipeline import Pipeline


def training_sequences(
    pipeline: Pipeline, data: str, count: int, *, seed: int = 0, data_dir: str | None = None, progress: bool = True
) -> tuple[list[Tensor], Tensor | None]:
    """``count`` images of the train split of ``data`` (a seeded random subset), encoded: (ids, labels)."""
    from argen.data import load_dataset
    from argen.tokenizers.cache import encode_dataset

    config = pipeline.tokenizer.config
    dataset = load_dataset(
        data, split="train", data_dir=data_dir, image_size=config.image_size, channels=config.channels,
        progress=progress,
    )  # fmt: skip
    if count > len(dataset):
        raise ArgenError(f"--num {count} is more than the {len(dataset)} training images of {data}")
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    dataset.images = dataset.images[chosen]
    labels = None if dataset.labels is None else dataset.labels[chosen]
    if pipeline.model.config.num_classes == 0:
        labels = None
    return encode_dataset(pipeline.tokenizer, dataset, progress=progress), labels


def sampled_sequences(
    pipeline: Pipeline, count: int, *, seed: int = 0, batch_size: int = 64
) -> tuple[list[Tensor], Tensor | None]:
    """``count`` samples of the model (classes in turn for a class-conditional one, its recommended settings)."""
    classes = pipeline.model.config.num_classes
    grids: list[list[Tensor]] = []
    all_labels = []
    for start in range(0, count, batch_size):
        size = min(batch_size, count - start)
        if classes:
            labels = torch.arange(start, start + size) % classes
            output = pipeline(labels, seed=seed + start)
            all_labels.append(labels)
        else:
            output = pipeline(num_images=size, seed=seed + start)
        grids.append([grid.cpu() for grid in output.ids])
    ids = [torch.cat([batch[index] for batch in grids]) for index in range(len(grids[0]))]
    return ids, torch.cat(all_labels) if all_labels else None
