"""Watching a run while it trains: validation loss at each checkpoint, a preview grid every ``--preview-every`` steps,
and optional TensorBoard logging (``--tensorboard``, the ``tensorboard`` extra).

The loss on the training batches says little about over-fitting or about what the model makes, so at every
checkpoint the released weights (the EMA when there is one) are scored on a small fixed held-out set (the first
`VALIDATION_EXAMPLES` of the data's test split, `TrainingTask.validation`), logged to ``metrics.jsonl`` as
``validation_loss`` in the training record of the checkpoint's step. Generators write a sample grid and tokenizers a
reconstruction grid (`TrainingTask.preview`) to ``OUT/previews/step-N.png``.

Watching never changes training: it runs on a copy of the weights, under ``torch.random.fork_rng`` (so the random
streams, and the bit-identical resume, are untouched), on the main process only.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from argen.data.files import enlarged
from argen.errors import ArgenError
from argen.model import autocast

if TYPE_CHECKING:
    from argen.train.state import Run

VALIDATION_EXAMPLES = 256
PREVIEW_DIRECTORY = "previews"


class Watcher:
    """Validation loss, previews and TensorBoard for one run (`fit` calls it on the main process)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.validation: dict[str, torch.Tensor] | None = None
        self.validation_loaded = False
        self.writer = open_tensorboard(run.out) if run.training.tensorboard else None

    def _watched_model(self) -> torch.nn.Module:
        """A copy of the weights a release holds (the EMA's, when there is one), in eval mode."""
        run = self.run
        if run.training.compile:  # a compiled module does not deep-copy reliably: score the live weights
            return run.model.eval()
        model = copy.deepcopy(run.model)
        if run.ema is not None:
            model.load_state_dict(run.ema.state_dict())
        return model.eval()

    def _validation_batch(self) -> dict[str, torch.Tensor] | None:
        if not self.validation_loaded:
            self.validation_loaded = True
            if self.run.task.validation is not None:
                try:
                    self.validation = self.run.task.validation()
                except ArgenError as error:  # e.g. a folder too small to hold out a test split
                    tqdm.write(f"no validation loss: {error}")
        return self.validation

    @torch.no_grad()
    def validate(self) -> float | None:
        """The mean loss of the watched weights on the held-out set (the loop puts it in metrics.jsonl)."""
        run = self.run
        validation = self._validation_batch()
        if validation is None:
            return None
        count = next(iter(validation.values())).shape[0]
        total = 0.0
        with torch.random.fork_rng(devices=[]):
            model = self._watched_model()
            for start in range(0, count, run.training.batch_size):
                batch = {name: tensor[start : start + run.training.batch_size].to(run.context.device)
                         for name, tensor in validation.items()}  # fmt: skip
                with autocast(run.training.precision, run.context.device):
                    loss, _ = run.task.loss(model, batch)
                total += float(loss) * next(iter(batch.values())).shape[0]
            run.model.train()
        return total / count

    @torch.no_grad()
    def preview(self) -> Path | None:
        """``OUT/previews/step-N.png``: samples (generators) or reconstructions (tokenizers) of the watched weights."""
        from argen.data import image_grid

        run = self.run
        if run.task.preview is None:
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same noise at every preview, so grids differ only by the weights
            images, columns = run.task.preview(self._watched_model(), self._validation_batch())
            run.model.train()
        path = run.out / PREVIEW_DIRECTORY / f"step-{run.step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid = image_grid(enlarged(images.cpu()), columns=columns)
        grid.save(path)
        if self.writer is not None:
            self.writer.add_image("preview", np.asarray(grid.convert("RGB")), run.step, dataformats="HWC")
        return path

    def record(self, record: dict[str, float]) -> None:
        """Send a metrics.jsonl record's numbers to TensorBoard (when --tensorboard found it installed)."""
        if self.writer is None:
            return
        step = int(record["step"])
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def open_tensorboard(out: Path):
    """A SummaryWriter on ``OUT/tensorboard``, or None with one line when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from argen.errors import install_hint

        tqdm.write(f"--tensorboard: tensorboard is not installed ({install_hint('tensorboard')}); training goes on")
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))
