"""`train_tokenizer`: a conv autoencoder with one of the registered quantizers, on the shared loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from tqdm.auto import tqdm

from argen.errors import ArgenError
from argen.tokenizers import TokenizerConfig
from argen.train.config import TrainingConfig
from argen.train.loop import fit
from argen.train.task import FitResult, TrainingTask
from argen.train.watch import VALIDATION_EXAMPLES


def train_tokenizer(
    data: str,
    *,
    tokenizer: TokenizerConfig,
    training: TrainingConfig,
    data_dir: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    scales: list[int] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Train the tokenizer that ``tokenizer`` (a `TokenizerConfig`) describes on the train split of ``data``.

    The config's ``image_size`` and ``channels`` are taken from the data as loaded (``image_size``/``channels``
    resize and convert; None keeps the source's own), so the release always matches what it was trained on.
    ``scales`` (multi-grid kinds) None picks `default_scales` for the latent side, e.g. 1,2,3,4,5,7 for 28×28
    images and 1,2,3,4,6,8 for 32×32.
    """
    from argen.data import images_to_float, load_dataset
    from argen.tokenizers import Tokenizer, build_tokenizer, default_scales

    train_set = load_dataset(
        data, split="train", data_dir=data_dir, image_size=image_size, channels=channels, progress=training.progress
    )
    channels, height, width = train_set.image_shape
    if height != width:
        raise ArgenError(f"tokenizers need square images, {data} gives {height}×{width}; pass --image-size")
    latent_side = height // 2**tokenizer.downsample
    config = replace(
        tokenizer, channels=channels, image_size=height, scales=scales if scales else default_scales(latent_side)
    )
    built = build_tokenizer(config)  # refuse an impossible config (size not divisible, scales) before any work
    if hasattr(built.quantizer, "band_sizes"):
        tqdm.write(f"frequency bands ({config.band_allocation}): {built.quantizer.band_sizes} frequencies per band")

    def tokenizer_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        # Call the (possibly DDP-wrapped) module itself so DDP sees the forward and synchronises gradients.
        _, losses, stats = model(images_to_float(batch["images"]))
        return Tokenizer.combine(losses, stats)

    def validation() -> dict[str, torch.Tensor]:
        test = load_dataset(data, split="test", data_dir=data_dir, image_size=height, channels=channels, progress=False)
        return {"images": test.images[:VALIDATION_EXAMPLES]}

    def preview(model: torch.nn.Module, held_out: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, int]:
        # Eight held-out images (training images without a test split) above their reconstructions.
        from argen.data import float_to_images

        originals = (held_out or {"images": train_set.images})["images"][:8]
        device = next(model.parameters()).device
        reconstructions = float_to_images(model.decode(model.encode(images_to_float(originals.to(device)))))
        return torch.cat([originals, reconstructions.cpu()]), originals.shape[0]

    task = TrainingTask(
        kind="tokenizer",
        config=config,
        build_model=lambda: build_tokenizer(config),
        tensors={"images": train_set.images},
        loss=tokenizer_loss,
        extra={"data": data},
        validation=validation,
        preview=preview,
        summary={
            "data": f"{data}, {channels}×{height}×{width}",
            "model": f"{config.kind} tokenizer, {built.codebook_size} codes, grids "
            + ", ".join(f"{rows}×{columns}" for rows, columns in built.grid_shapes),
        },
    )
    return fit(task, training, on_step=on_step)
