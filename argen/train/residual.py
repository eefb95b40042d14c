"""Training the residual model p(image | reconstruction) of `argen compress --lossless` (`argen train-residual`).

The model itself is `argen.codec.residual`; this is its trainer: the tokenizer's reconstructions of the training
images, computed once and cached, and the shared training loop (`argen.train.fit`) on the model's code length.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from argen.checkpoint import atomic_write, read_release_config, release_fingerprint
from argen.codec.residual import RESIDUAL_DIRECTORY, RESIDUAL_KIND, ResidualConfig, ResidualModel
from argen.data import float_to_images, images_to_float, load_dataset
from argen.errors import ArgenError
from argen.tokenizers import load_tokenizer
from argen.tokenizers.autoencoder import Tokenizer
from argen.train import FitResult, TrainingConfig, TrainingTask, fit


@torch.no_grad()
def reconstruct(tokenizer: Tokenizer, images: Tensor, *, batch_size: int = 256, progress: bool = True) -> Tensor:
    """uint8 (N, C, H, W) → the tokenizer's uint8 reconstructions, what lossy decoding outputs."""
    pieces = []
    for start in tqdm(range(0, len(images), batch_size), desc="reconstruct", unit="batch", disable=not progress):
        batch = images_to_float(images[start : start + batch_size])
        pieces.append(float_to_images(tokenizer.decode(tokenizer.encode(batch))))
    return torch.cat(pieces)


def train_residual(
    model_directory: str | Path,
    *,
    training: TrainingConfig,
    release: str | Path | None = None,
    config: ResidualConfig | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    limit: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Train a residual model for the tokenizer of ``model_directory`` on the train split of ``data`` (default: the
    data the generator was trained on).

    ``training`` is a `argen.train.TrainingConfig`; its ``out`` is the run directory (training state, metrics, and
    the reconstructions, computed once and cached as ``reconstructions-train.safetensors``, refused if another
    tokenizer made them). The release goes to ``release`` (default ``model_directory/residual``), so that a model
    directory ships with its residual model and nothing else. ``limit`` trains on the first N images only.
    """
    model_directory = Path(model_directory)
    tokenizer_directory = model_directory / "tokenizer"
    if not (tokenizer_directory / "config.json").is_file():
        raise ArgenError(f"{model_directory} is not an argen model directory: it has no tokenizer/ (see argen train)")
    tokenizer, _ = load_tokenizer(tokenizer_directory)
    fingerprint = release_fingerprint(tokenizer_directory)
    if data is None:
        generator = model_directory / "generator"
        extra = read_release_config(generator, kind="generator").get("extra", {}) if generator.is_dir() else {}
        data = extra.get("data")
        if data is None:
            raise ArgenError(f"{model_directory} does not record its training data: pass --data")
    size, channels = tokenizer.config.image_size, tokenizer.config.channels
    values = dict((config or ResidualConfig()).__dict__, channels=channels, image_size=size)
    config = ResidualConfig(**values)
    dataset = load_dataset(
        data, split="train", data_dir=data_dir, image_size=size, channels=channels, progress=training.progress
    )
    images = dataset.images[:limit] if limit else dataset.images
    cache = Path(training.out) / "reconstructions-train.safetensors"
    reconstructions = None
    if cache.is_file():
        with safe_open(str(cache), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("tokenizer_fingerprint") == fingerprint and metadata.get("data") == data:
            stored = load_file(str(cache))["reconstructions"]
            if len(stored) >= len(images):
                reconstructions = stored[: len(images)]
    if reconstructions is None:
        reconstructions = reconstruct(tokenizer.eval(), images, progress=training.progress)
        metadata = {"tokenizer_fingerprint": fingerprint, "data": data}
        tensors = {"reconstructions": reconstructions.contiguous()}
        atomic_write(cache, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))

    def residual_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        # One random stage per image: stages hold equal pixel counts, so the mean over them is the image's bits/dim.
        stage = torch.randint(config.stages, (batch["images"].shape[0],), device=batch["images"].device)
        bits = model.stage_loss(batch["images"], batch["reconstructions"], stage).mean()
        return bits, {"bits_per_dim": float(bits.detach())}

    task = TrainingTask(
        kind=RESIDUAL_KIND,
        config=config,
        build_model=lambda: ResidualModel(config),
        tensors={"images": images, "reconstructions": reconstructions},
        loss=residual_loss,
        release_directory=str(release if release is not None else model_directory / RESIDUAL_DIRECTORY),
        extra={"tokenizer_fingerprint": fingerprint, "data": data, "images": len(images)},
    )
    return fit(task, training, on_step=on_step)


__all__ = ["reconstruct", "train_residual"]
