"""What a trainer hands the shared loop (`TrainingTask`) and what the loop hands back (`FitResult`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

METRICS_NAME = "metrics.jsonl"

# A batch: every training tensor indexed by the batch's examples, e.g. {"images": (B, C, H, W), "labels": (B,)}.
Batch = dict[str, torch.Tensor]
# loss(model, batch) → (scalar loss, floats to log). The model may be wrapped in DDP.
LossFunction = Callable[[torch.nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]
# preview(model, validation batch or None) → (uint8 images (N, C, H, W), columns of the grid): what the weights make.
PreviewFunction = Callable[[torch.nn.Module, Batch | None], tuple[torch.Tensor, int]]


@dataclass
class TrainingTask:
    """What a trainer trains. ``tensors`` share their first dimension (the examples); a batch is a dict of
    ``tensor[indices]``. ``loss(model, batch)`` returns a scalar loss and a dict of floats to log.

    ``config`` is the component's config dataclass (written to ``config.json``); ``summary`` is what the trainer
    knows that the loop does not, for the start-of-run summary: ``data`` (images, classes, size), ``model``
    (preset, kind) and, for generators, ``tokens`` (tokens per image). Values are short strings. ``validation`` and
    ``preview`` feed `argen.train.watch` (validation loss at checkpoints, preview grids).
    """

    kind: str
    config: object
    build_model: Callable[[], torch.nn.Module]  # called after seeding, so --seed fixes the initial weights
    tensors: Batch
    loss: LossFunction
    release_directory: str | None = None
    extra: dict[str, object] = field(default_factory=dict)  # JSON values stored beside the release's config
    # Parameters excluded from weight decay: biases, norms, embeddings (anything with fewer than 2 dims).
    no_decay: Callable[[str, torch.nn.Parameter], bool] = lambda name, parameter: parameter.ndim < 2
    summary: dict[str, str] = field(default_factory=dict)
    # A small fixed held-out set (made when first needed), scored with ``loss`` at every checkpoint; and the preview
    # grid of `argen.train.watch`. None: the trainer has neither.
    validation: Callable[[], Batch] | None = None
    preview: PreviewFunction | None = None


@dataclass
class FitResult:
    step: int
    reason: str  # "finished", "time budget", "interrupted"
    out: Path
    last_logs: dict[str, float]
    is_main: bool = True  # False on the DDP ranks that do not write files
