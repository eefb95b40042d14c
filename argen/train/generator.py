"""`train_generator`: the transformer under a generation order, trained on a tokenizer's cached ids."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from argen.checkpoint import config_to_dict, run_directory_lock
from argen.dist import DistributedContext, setup
from argen.orders import Order
from argen.tokenizers import Tokenizer
from argen.train.budget import (
    MIN_BATCH,
    MIN_STEPS,
    PROBE_BATCH,
    BudgetPlan,
    load_plan,
    measure_seconds_per_example,
    plan_for_budget,
    save_plan,
)
from argen.train.config import TrainingConfig
from argen.train.loop import check_budget, fit
from argen.train.task import FitResult, TrainingTask
from argen.train.watch import VALIDATION_EXAMPLES

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
    choose: tuple[str, ...] = (),
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

        def make_task(preset: str, training: TrainingConfig) -> TrainingTask:
            return generator_task(
                tokenizer_directory, order_name, data, training=training, context=context, preset=preset,
                data_dir=data_dir, tokens=tokens, transformer_overrides=transformer_overrides,
            )  # fmt: skip

        plan = None
        if choose and training.minutes is not None:
            plan = _budget_plan(make_task, training, context=context, preset=preset, choose=choose)
            preset = plan.preset
            training = replace(training, batch_size=plan.batch_size, warmup_steps=plan.warmup_steps)
        task = make_task(preset, training)
        if plan is not None:
            chosen = ", ".join(f"{name.replace('_', ' ')} {getattr(plan, name)}" for name in choose)
            task.summary["chosen"] = f"{chosen}: {plan.reason}"
        return fit(task, training, context=context, on_step=on_step)


def _budget_plan(
    make_task: Callable[[str, TrainingConfig], TrainingTask], training: TrainingConfig, *,
    context: DistributedContext, preset: str, choose: tuple[str, ...],
) -> BudgetPlan:  # fmt: skip
    """The run's `BudgetPlan`: the one it started with when resuming, else timed here (every rank agrees: each
    preset's slowest rank counts)."""
    from argen.checkpoint import STATE_NAME
    from argen.model import PRESETS

    out = Path(training.out)
    saved = load_plan(out)
    if saved is not None and (out / STATE_NAME).exists() and not training.fresh:
        return saved
    given = {"preset": preset, "batch_size": training.batch_size, "warmup_steps": training.warmup_steps}
    given = {name: value for name, value in given.items() if name not in choose}
    seconds: dict[str, float] = {}
    examples = 0
    for candidate in [preset] if "preset" in given else list(PRESETS):
        task = make_task(candidate, training)
        examples = next(iter(task.tensors.values())).shape[0]
        measured = measure_seconds_per_example(
            task, batch_size=min(PROBE_BATCH, examples), device=context.device, precision=training.precision
        )
        timing = torch.tensor(measured / context.world_size)  # a global batch is split over the ranks
        if context.enabled:
            torch.distributed.all_reduce(timing, op=torch.distributed.ReduceOp.MAX)
        seconds[candidate] = float(timing)
        if training.minutes * 60 / (seconds[candidate] * min(MIN_BATCH, examples)) < MIN_STEPS:
            break  # larger presets are slower still
    plan = plan_for_budget(seconds, minutes=training.minutes, examples=examples, given=given)
    if context.is_main:
        save_plan(out, plan)
    return plan


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
        validation=partial(
            held_out_ids, tokenizer, data=data, data_dir=data_dir, device=context.device, labelled="labels" in tensors
        ),
        preview=partial(preview_samples, order=order, tokenizer=tokenizer, classes=len(classes)),
        summary={
            "data": f"{data}, {len(classes) or 'no'} classes, "
            f"{tokenizer.config.channels}×{tokenizer.config.image_size}×{tokenizer.config.image_size}",
            "model": f"{preset} preset, {order.name} order, width {transformer_config.width}, "
            f"depth {transformer_config.depth}",
            "tokens": f"{sum(rows * columns for rows, columns in tokenizer.grid_shapes)} per image "
            f"({len(tokenizer.grid_shapes)} grids, {tokenizer.codebook_size} codes)",
        },
    )


def held_out_ids(
    tokenizer: Tokenizer, *, data: str, data_dir: str | None, device: torch.device, labelled: bool
) -> dict[str, torch.Tensor]:
    """The first `VALIDATION_EXAMPLES` images of the test split, encoded: a generator's fixed held-out set, as
    ``grid_i`` (B, h, w) and ``labels`` (B,) like the training tensors."""
    from argen.data import images_to_float, load_dataset

    config = tokenizer.config
    test = load_dataset(
        data, split="test", data_dir=data_dir, image_size=config.image_size, channels=config.channels, progress=False
    )
    with torch.no_grad():
        grids = tokenizer.encode(images_to_float(test.images[:VALIDATION_EXAMPLES].to(device)))
    held_out = {f"grid_{index}": grid.cpu() for index, grid in enumerate(grids)}
    if labelled and test.labels is not None:
        held_out["labels"] = test.labels[:VALIDATION_EXAMPLES]
    return held_out


def preview_samples(
    model: torch.nn.Module, _: object, *, order: Order, tokenizer: Tokenizer, classes: int
) -> tuple[torch.Tensor, int]:
    """Two rows of samples, a column per class (up to 8), unguided at temperature 1: uint8 (N, C, H, W), columns."""
    from argen.data import float_to_images
    from argen.samplers.ar import generate

    shown = min(classes, 8)
    device = next(model.parameters()).device
    request = {"labels": torch.arange(shown, device=device).repeat(2)} if shown else {"batch_size": 16}
    output = generate(model, order, tokenizer, **request)
    latent = getattr(output, "latent", None)
    decoded = tokenizer.decode_latent(latent) if latent is not None else tokenizer.decode(output.ids)
    return float_to_images(decoded), shown or 8
