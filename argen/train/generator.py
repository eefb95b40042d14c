"""`train_generator`: the transformer under a generation order, trained on a tokenizer's cached ids."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch

from argen.checkpoint import config_to_dict, run_directory_lock
from argen.dist import DistributedContext, setup
from argen.tokenizers import Tokenizer
from argen.train.config import TrainingConfig
from argen.train.loop import check_budget, fit
from argen.train.task import FitResult, TrainingTask

# Transformer settings a command may override on top of the preset (width, depth, heads, dropout, class_dropout).
TransformerOverrides = dict[str, int | float]


def train_generator(
    tokenizer_directory: str,
    order_name: str,
    data: str,
    *,
    training: TrainingConfig,
    preset: str = "3m",
    data_dir: str | None = None,
    tokens: str | None = None,
    transformer_overrides: TransformerOverrides | None = None,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Train a transformer under ``order_name`` on the ids of ``data`` as encoded by the tokenizer in
    ``tokenizer_directory``. ``OUT`` becomes a model directory: ``OUT/tokenizer`` (a copy), ``OUT/generator``.

    The ids come from a token cache: ``tokens`` if given, else ``OUT/tokens-train.safetensors``, made on the first
    run (rank 0 encodes, the others wait) and refused if another tokenizer made it. The run directory is locked
    from before the cache is made until training ends.
    """
    check_budget(training)
    context = setup(training.device)
    with run_directory_lock(training.out) if context.is_main else contextlib.nullcontext():
        task = generator_task(
            tokenizer_directory, order_name, data, training=training, context=context, preset=preset,
            data_dir=data_dir, tokens=tokens, transformer_overrides=transformer_overrides,
        )  # fmt: skip
        return fit(task, training, context=context, on_step=on_step)


def cached_token_ids(
    tokenizer: Tokenizer, *, fingerprint: str, data: str, cache: Path, data_dir: str | None,
    context: DistributedContext, progress: bool,
) -> tuple[list[torch.Tensor], torch.Tensor | None, dict]:  # fmt: skip
    """(ids, labels, metadata) of the train split from the token cache ``cache``, encoding it first if missing."""
    from argen.data import load_dataset
    from argen.tokenizers.cache import encode_dataset, load_token_cache, save_token_cache

    if not cache.exists():
        if context.is_main:
            dataset = load_dataset(
                data, split="train", data_dir=data_dir, image_size=tokenizer.config.image_size,
                channels=tokenizer.config.channels, progress=progress,
            )  # fmt: skip
            ids = encode_dataset(tokenizer, dataset, progress=progress)
            save_token_cache(
                cache, ids=ids, labels=dataset.labels, classes=dataset.classes,
                codebook_size=tokenizer.codebook_size, fingerprint=fingerprint, spec=data, split="train",
            )  # fmt: skip
        context.barrier()
    return load_token_cache(cache, fingerprint=fingerprint)


def generator_task(
    tokenizer_directory: str,
    order_name: str,
    data: str,
    *,
    training: TrainingConfig,
    context: DistributedContext,
    preset: str,
    data_dir: str | None,
    tokens: str | None,
    transformer_overrides: TransformerOverrides | None,
) -> TrainingTask:
    """What `train_generator` trains: the transformer for the order on the tokenizer, fed the cached ids."""
    import torch.nn.functional as F

    from argen.checkpoint import GENERATOR_KIND, GeneratorConfig, copy_release, release_fingerprint
    from argen.model import Transformer, preset_config
    from argen.orders import build_order
    from argen.tokenizers import load_tokenizer

    out = Path(training.out)
    tokenizer, _ = load_tokenizer(tokenizer_directory)
    tokenizer.requires_grad_(False)
    order = build_order(order_name, tokenizer)  # refuses a tokenizer that does not fit, before any work
    fingerprint = release_fingerprint(tokenizer_directory)
    cache = Path(tokens) if tokens else out / "tokens-train.safetensors"
    ids, labels, metadata = cached_token_ids(
        tokenizer, fingerprint=fingerprint, data=data, cache=cache, data_dir=data_dir, context=context,
        progress=training.progress,
    )  # fmt: skip
    if context.is_main:
        copy_release(tokenizer_directory, out / "tokenizer")
    classes = metadata["classes"] if labels is not None else []
    tokenizer = tokenizer.to(context.device).eval()

    settings = order.model_settings(tokenizer)
    transformer_config = preset_config(preset, num_classes=len(classes), **settings, **(transformer_overrides or {}))
    layout = order.layout(tokenizer.grid_shapes)
    tensors = {f"grid_{index}": grid for index, grid in enumerate(ids)}
    if labels is not None and classes:
        tensors["labels"] = labels

    def generator_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        grids = [batch[f"grid_{index}"] for index in range(len(ids))]
        with torch.no_grad():
            inputs, targets = order.train_inputs(grids, tokenizer)
        logits = order.logits(model(inputs, batch.get("labels"), layout=layout), layout)  # (B, L, V)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        accuracy = (logits.argmax(-1) == targets).float().mean()
        return loss, {"token_accuracy": float(accuracy)}

    return TrainingTask(
        kind=GENERATOR_KIND,
        config=GeneratorConfig(order=order.name, transformer=config_to_dict(transformer_config)),
        build_model=lambda: Transformer(transformer_config),
        tensors=tensors,
        loss=generator_loss,
        release_directory=str(out / "generator"),
        extra={"classes": classes, "tokenizer_fingerprint": fingerprint, "data": data},
        summary={
            "data": f"{data}, {len(classes) or 'no'} classes, "
            f"{tokenizer.config.channels}×{tokenizer.config.image_size}×{tokenizer.config.image_size}",
            "model": f"{preset} preset, {order.name} order, width {transformer_config.width}, "
            f"depth {transformer_config.depth}",
            "tokens": f"{sum(rows * columns for rows, columns in tokenizer.grid_shapes)} per image "
            f"({len(tokenizer.grid_shapes)} grids, {tokenizer.codebook_size} codes)",
        },
    )
