"""Training: the shared loop and one file per trainer.

- `config`: `TrainingConfig`, how to train, each setting written once (the CLI flags are generated from it);
- `task`: what a trainer hands the loop (`TrainingTask`) and gets back (`FitResult`);
- `loop`: `fit`, the loop itself (budgets, schedule, DDP, interrupts); `state`: resume, checkpoints, EMA,
  divergence; `summary`: the start-of-run summary;
- trainers: `tokenizer`, `generator`, `classifier`, `residual` (the lossless codec's residual model, whose model
  lives in `argen.codec.residual`; imported on use, since it loads the codec).
"""

from argen.train.classifier import train_classifier
from argen.train.config import TrainingConfig, check_training, learning_rate_at
from argen.train.generator import cached_token_ids, generator_task, train_generator
from argen.train.loop import fit
from argen.train.state import ExponentialMovingAverage, TrainingDiverged, keep_snapshot
from argen.train.task import METRICS_NAME, FitResult, TrainingTask
from argen.train.tokenizer import train_tokenizer

__all__ = [
    "METRICS_NAME",
    "ExponentialMovingAverage",
    "FitResult",
    "TrainingConfig",
    "TrainingDiverged",
    "TrainingTask",
    "cached_token_ids",
    "check_training",
    "fit",
    "generator_task",
    "keep_snapshot",
    "learning_rate_at",
    "train_classifier",
    "train_generator",
    "train_tokenizer",
]
