"""A classifier that explains itself by prototypes, after Li, Liu, Chen and Rudin, "Deep Learning for Case-Based
Reasoning through Prototypes: A Neural Network that Explains Its Predictions" (arXiv 1710.04806).

An autoencoder maps an image x to a latent f(x); a prototype layer holds m learned latents p_j; the classifier is a
linear layer on the squared distances ||f(x) - p_j||² (§2). The loss is the paper's four terms (§2.2, eq. 1):

    λ_class · cross-entropy + λ · ||g(f(x)) - x||² + λ1 · R1 + λ2 · R2,
    R1 = mean_j min_i ||p_j - f(x_i)||²   (every prototype is near some training example: it decodes to an image)
    R2 = mean_i min_j ||f(x_i) - p_j||²   (every example is near some prototype: the explanation is close)

with λ_class = 20, λ = λ1 = λ2 = 1 as in the authors' MNIST code. A prediction is explained by the prototypes
nearest to the image's latent, shown decoded (`prototype_images`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from argen.checkpoint import load_release

if TYPE_CHECKING:
    from argen.train import FitResult, TrainingConfig

PROTOTYPE_KIND = "prototype-classifier"


@dataclass
class PrototypeConfig:
    channels: int
    image_size: int
    num_classes: int
    prototypes: int = 15
    width: int = 32  # channels of the convolutions
    latent_channels: int = 10
    class_weight: float = 20.0  # λ_class
    reconstruction_weight: float = 1.0  # λ
    prototype_weight: float = 1.0  # λ1: R1
    example_weight: float = 1.0  # λ2: R2


class PrototypeOutput(NamedTuple):
    logits: Tensor  # (B, classes)
    distances: Tensor  # (B, m) squared latent distances to the prototypes
    latent: Tensor  # (B, F) flattened f(x)
    reconstruction: Tensor  # (B, C, H, W) in [0, 1]


class PrototypeClassifier(nn.Module):
    """Images (B, C, H, W) in [0, 1] → class logits through distances to prototypes (module docstring)."""

    def __init__(self, config: PrototypeConfig):
        super().__init__()
        self.config = config
        width, channels = config.width, config.channels
        # The paper's encoder: stride-2 convolutions with sigmoids; the decoder mirrors it.
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.Sigmoid(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.Sigmoid(),
            nn.Conv2d(width, config.latent_channels, 3, stride=2, padding=1), nn.Sigmoid(),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(config.latent_channels, width, 4, stride=2, padding=1), nn.Sigmoid(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.Sigmoid(),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1), nn.Sigmoid(),
        )  # fmt: skip
        side = config.image_size
        for _ in range(3):
            side = (side + 1) // 2
        self.latent_shape = (config.latent_channels, side, side)
        latent_size = config.latent_channels * side * side
        self.prototype_vectors = nn.Parameter(torch.rand(config.prototypes, latent_size))  # (m, F), in sigmoid range
        self.classifier = nn.Linear(config.prototypes, config.num_classes, bias=False)

    def encode(self, images: Tensor) -> Tensor:
        """(B, C, H, W) → (B, F)."""
        return self.encoder(images).flatten(1)

    def decode(self, latent: Tensor) -> Tensor:
        """(B, F) → (B, C, H, W) at the input size."""
        out = self.decoder(latent.view(-1, *self.latent_shape))
        size = self.config.image_size
        return out[..., :size, :size] if out.shape[-1] >= size else F.interpolate(out, size=(size, size))

    def forward(self, images: Tensor) -> PrototypeOutput:
        latent = self.encode(images)
        distances = torch.cdist(latent, self.prototype_vectors).square()  # (B, m)
        return PrototypeOutput(self.classifier(distances), distances, latent, self.decode(latent))

    @torch.no_grad()
    def prototype_images(self) -> Tensor:
        """(m, C, H, W) the prototypes decoded: what the classifier compares images with."""
        return self.decode(self.prototype_vectors)

    @torch.no_grad()
    def explain(self, images: Tensor, *, nearest: int = 3) -> tuple[Tensor, Tensor, Tensor]:
        """(predicted classes (B,), the ``nearest`` prototypes' indices (B, n), their distances (B, n))."""
        output = self(images)
        distances, indices = output.distances.topk(min(nearest, self.config.prototypes), largest=False)
        return output.logits.argmax(-1), indices, distances


def prototype_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """The four-term loss of eq. 1 on ``batch["images"]`` (uint8 (B, C, H, W)) and ``batch["labels"]`` (B,)."""
    classifier: PrototypeClassifier = getattr(model, "module", model)
    config = classifier.config
    images = batch["images"].float() / 255
    output = model(images)
    classification = F.cross_entropy(output.logits, batch["labels"])
    reconstruction = (output.reconstruction - images).square().flatten(1).sum(1).mean()
    r1 = output.distances.min(0).values.mean()  # each prototype to its nearest example
    r2 = output.distances.min(1).values.mean()  # each example to its nearest prototype
    loss = (
        config.class_weight * classification + config.reconstruction_weight * reconstruction
        + config.prototype_weight * r1 + config.example_weight * r2
    )  # fmt: skip
    accuracy = (output.logits.argmax(-1) == batch["labels"]).float().mean()
    logs = {"accuracy": float(accuracy), "reconstruction": float(reconstruction.detach()), "r1": float(r1.detach())}
    return loss, {**logs, "r2": float(r2.detach())}


def train_prototype_classifier(
    data: str,
    *,
    training: TrainingConfig,
    prototypes: int = 15,
    data_dir: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> FitResult:
    """Train the prototype classifier on the train split of ``data`` with argen's loop (`argen train-classifier
    --prototypes N`); the release in ``training.out`` decodes its prototypes with `prototype_images`."""
    from argen.data import load_dataset
    from argen.errors import ArgenError
    from argen.train import TrainingTask, fit

    dataset = load_dataset(
        data, split="train", data_dir=data_dir, image_size=image_size, channels=channels, progress=training.progress
    )
    if dataset.labels is None or not dataset.classes:
        raise ArgenError(f"{data} has no labels: a classifier needs a labelled dataset")
    image_channels, height, _ = dataset.image_shape
    config = PrototypeConfig(
        channels=image_channels, image_size=height, num_classes=len(dataset.classes), prototypes=prototypes
    )
    task = TrainingTask(
        kind=PROTOTYPE_KIND,
        config=config,
        build_model=lambda: PrototypeClassifier(config),
        tensors={"images": dataset.images, "labels": dataset.labels},
        loss=prototype_loss,
        extra={"classes": dataset.classes, "data": data},
    )
    return fit(task, training)


def load_prototype_classifier(directory: str | Path) -> PrototypeClassifier:
    model, _ = load_release(directory, kind=PROTOTYPE_KIND, config_class=PrototypeConfig, build=PrototypeClassifier)
    return model
