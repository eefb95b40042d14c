"""A small image classifier: the feature network of argen's offline evaluation.

FID, KID and precision/recall need a feature network, and the papers' Inception-v3 needs weights from the
internet and 299×299 inputs. A small CNN trained on the data at hand gives features that exist offline and fit
28×28 images: its penultimate layer defines the feature-based metrics, its logits the Inception Score and the
class accuracy of class-conditional samples. Its trainer is `argen.train.classifier`.

GroupNorm rather than BatchNorm: the batch statistics of BatchNorm would make a 2-process DDP run differ from a
1-process run with the same global batch, and features would depend on what else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from argen.checkpoint import load_release
from argen.data import ImageDataset, images_to_float

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
