"""A small image classifier: the feature network of argen's offline evaluation.

FID, KID and precision/recall need a feature network, and the papers' Inception-v3 needs weights from the
internet and 299×299 inputs. A small CNN trained on the data at hand gives features that exist offline and fit
28×28 images: its penultimate layer defines the feature-based metrics, its logits the Inception Score and the
class accuracy of class-conditional samples. It is also the first trainer on argen's shared training loop.

GroupNorm rather than BatchNorm: the batch statistics of BatchNorm would make a 2-process DDP run differ from a
1-process run with the same global batch, and features would depend on what else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from argen.checkpoint import load_release, save_release
from argen.data import ImageDataset, images_to_float, load_dataset
from argen.errors import ArgenError
from argen.train import FitResult, TrainingConfig, TrainingTask, fit

KIND = "classifier"


@dataclass
class ClassifierConfig:
    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    width: int = 32
    feature_dim: int = 128
    # Augmentation during training: shift by up to this many pixels; mirror left-right (off for digits).
    shift: int = 2
    flip: bool = False
    dropout: float = 0.2


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1), nn.GroupNorm(min(8, outputs // 4), outputs), nn.SiLU()
    )


class Classifier(nn.Module):
    """images (B, C, H, W) in [-1, 1] → logits (B, num_classes); `features` gives the (B, feature_dim) layer."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.body = nn.Sequential(
            _block(config.channels, width),
            _block(width, width),
            nn.MaxPool2d(2),
            _block(width, 2 * width),
            _block(2 * width, 2 * width),
            nn.MaxPool2d(2),
            _block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.project = nn.Sequential(nn.Linear(4 * width, config.feature_dim), nn.SiLU())
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.body(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


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


@torch.no_grad()
def evaluate_accuracy(model: Classifier, dataset: ImageDataset, *, batch_size: int = 500) -> float:
    """Fraction of ``dataset`` classified correctly (no augmentation, eval mode)."""
    model.eval()
    correct = 0
    for start in range(0, len(dataset), batch_size):
        images = images_to_float(dataset.images[start : start + batch_size])
        correct += int((model(images).argmax(-1) == dataset.labels[start : start + batch_size]).sum())
    return correct / len(dataset)


def load_classifier(directory: str | Path) -> tuple[Classifier, dict]:
    """Load a released classifier; returns the model (eval mode) and its config.json document."""
    return load_release(directory, kind=KIND, config_class=ClassifierConfig, build=Classifier)


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
    on_step=None,
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
