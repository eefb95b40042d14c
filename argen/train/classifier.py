"""`train_classifier`: the small CNN of `argen.metrics.classifier` on the shared loop, with shift/flip augmentation.

It reports the accuracy on the held-out test split at the end and stores it in the release's config.json.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from argen.checkpoint import save_release
from argen.data import images_to_float, load_dataset
from argen.errors import ArgenError
from argen.metrics.classifier import KIND, Classifier, ClassifierConfig, evaluate_accuracy, load_classifier
from argen.train.config import TrainingConfig
from argen.train.loop import fit
from argen.train.task import FitResult, TrainingTask


def augment(images: torch.Tensor, *, shift: int, flip: bool) -> torch.Tensor:
    """Random translations (zero padding then a random crop per image) and optional mirroring, on (B, C, H, W)."""
    if shift > 0:
        batch, _, height, width = images.shape
        padded = F.pad(images, (shift, shift, shift, shift), value=-1.0)
        offsets = torch.randint(0, 2 * shift + 1, (batch, 2))
        rows = torch.arange(height)[None, :] + offsets[:, :1]  # (B, H)
        cols = torch.arange(width)[None, :] + offsets[:, 1:]  # (B, W)
        batch_index = torch.arange(batch)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mirrored = torch.rand(images.shape[0]) < 0.5
        images = torch.where(mirrored[:, None, None, None], images.flip(-1), images)
    return images


def classifier_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    config = model.module.config if hasattr(model, "module") else model.config
    images = augment(images_to_float(batch["images"]), shift=config.shift, flip=config.flip)
    logits = model(images)
    loss = F.cross_entropy(logits, batch["labels"])
    accuracy = (logits.argmax(-1) == batch["labels"]).float().mean()
    return loss, {"accuracy": float(accuracy)}


def train_classifier(
    data: str,
    *,
    training: TrainingConfig,
    data_dir: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    width: int = 32,
    shift: int = 2,
    flip: bool = False,
    dropout: float = 0.2,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Train a classifier on the train split of ``data``, then report its accuracy on the test split."""
    train_set = load_dataset(
        data, split="train", data_dir=data_dir, image_size=image_size, channels=channels, progress=training.progress
    )
    if train_set.labels is None:
        raise ArgenError(f"{data} has no labels; a classifier needs images in one subfolder per class")
    channels_found, height, _ = train_set.image_shape
    config = ClassifierConfig(
        channels=channels_found,
        image_size=height,
        num_classes=train_set.num_classes,
        width=width,
        shift=shift,
        flip=flip,
        dropout=dropout,
    )
    task = TrainingTask(
        kind=KIND,
        config=config,
        build_model=lambda: Classifier(config),
        tensors={"images": train_set.images, "labels": train_set.labels},
        loss=classifier_loss,
        extra={"classes": train_set.classes, "data": data},
        summary={
            "data": f"{data}, {train_set.num_classes} classes, {channels_found}×{height}×{train_set.image_shape[2]}",
            "model": f"classifier CNN, width {width}",
        },
    )
    result = fit(task, training, on_step=on_step)
    if result.reason == "finished" and result.is_main:
        test_set = load_dataset(
            data,
            split="test",
            data_dir=data_dir,
            image_size=height,
            channels=channels_found,
            progress=training.progress,
        )
        model, document = load_classifier(result.out)
        accuracy = evaluate_accuracy(model, test_set)
        extra = dict(document.get("extra", {}), test_accuracy=accuracy)
        save_release(result.out, kind=KIND, config=config, state_dict=model.state_dict(), extra=extra)
        result.last_logs["test_accuracy"] = accuracy
        tqdm.write(f"test accuracy {accuracy:.4f} on {len(test_set)} images")
    return result
