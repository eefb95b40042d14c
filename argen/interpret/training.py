"""`argen train-sae` as a function: train an SAE on one hook of a capture, then measure it on held-out sequences
(L0, FVU, dead fraction) and in the generator (delta loss, argen.interpret.splice); writes SAE/metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from argen.checkpoint import atomic_write_text
from argen.errors import ArgenError
from argen.interpret.activations import Activations
from argen.interpret.sae import (
    SparseAutoencoderConfig,
    evaluate_sparse_autoencoder,
    load_sparse_autoencoder,
    train_sparse_autoencoder,
)
from argen.interpret.splice import reconstruction_edit, spliced_loss_increase
from argen.train import TrainingConfig

METRICS_FILE = "metrics.json"


def train_and_measure(
    activations_directory: str | Path,
    *,
    settings: dict[str, str | int | float],
    training: TrainingConfig,
    model: str | None = None,
    held_out: float = 0.1,
) -> dict[str, float | int | str]:
    """Train an SAE (``settings``: the `SparseAutoencoderConfig` fields other than width and model, ``hook``
    included) on the first sequences of the capture, measure it on the last ``held_out`` share, and write
    ``training.out/metrics.json``. ``model`` (a model directory) defaults to the one the capture names."""
    activations = Activations(activations_directory)
    hook = str(settings["hook"])
    if not 0 < held_out < 1:
        raise ArgenError(f"--held-out must lie strictly between 0 and 1, got {held_out}")
    held = max(1, round(activations.sequences * held_out))
    trained = activations.sequences - held
    if trained < 1:
        raise ArgenError(f"{activations_directory} holds {activations.sequences} sequences: too few to hold some out")
    rows = activations.load(hook)
    split = trained * activations.length
    model = model or activations.manifest.get("source", {}).get("model")
    config = SparseAutoencoderConfig(width=rows.shape[1], model=str(model or ""), **settings)
    extra = {"activations": str(activations_directory)}
    result = train_sparse_autoencoder(rows[:split], config, training, extra=extra)
    if not result.is_main:
        return {}
    sae = load_sparse_autoencoder(training.out)
    metrics: dict[str, float | int | str] = {"hook": hook, "kind": config.kind, "latents": config.latents}
    metrics.update(evaluate_sparse_autoencoder(sae, rows[split:]))
    if model:
        metrics.update(_delta_loss(model, activations, sae, hook, first=trained))
    metrics.update({"step": result.step, "held_out_sequences": held, "trained_sequences": trained})
    atomic_write_text(Path(training.out) / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics


def _delta_loss(model: str, activations: Activations, sae: torch.nn.Module, hook: str, *, first: int) -> dict:
    from argen.pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(model)
    tensors = activations.sequence_tensors()
    ids = [grid[first:] for grid in activations.ids()]
    labels = tensors["labels"][first:] if "labels" in tensors else None
    return spliced_loss_increase(
        pipeline.model, pipeline.order, pipeline.tokenizer, ids, labels, hook=hook, edit=reconstruction_edit(sae)
    )
