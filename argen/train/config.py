"""`TrainingConfig`: how to train (budgets, optimizer, schedule, checkpoints), written once.

Each field carries its help text and its check in the dataclass field's metadata. The command-line flags of every
trainer are generated from these fields (`argen.commands.arguments.add_training_arguments`), TOML recipes go
through the same flags, and `check_training` applies the same checks to a config built in Python, so a setting has
one default, one help text and one rule wherever it comes from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from argen.errors import ArgenError

# The largest seed: torch.manual_seed and DistributedSampler take signed 64-bit integers.
MAX_SEED = 2**63 - 1


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def whole_number(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]: 3 and "3" pass, 2.5, "2.5", True and 2**70 are refused."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ArgenError(f"{_flag(name)} takes a whole number, got {value!r}")
    try:
        number = int(value)  # a TOML integer, an integral float, or the command line's text
    except (TypeError, ValueError, OverflowError):
        raise ArgenError(f"{_flag(name)} takes a whole number, got {value!r}") from None
    if number < minimum or (maximum is not None and number > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ArgenError(f"{_flag(name)} must be at least {minimum}{upper}, got {number}")
    return number


def finite_number(
    name: str, value: object, *, minimum: float, maximum: float | None = None, exclusive: bool = False
) -> float:
    """``value`` as a finite float in [minimum, maximum] (``exclusive``: above ``minimum``); NaN and inf refused."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise ArgenError(f"{_flag(name)} takes a number, got {value!r}") from None
    low_ok = number > minimum if exclusive else number >= minimum
    if not math.isfinite(number) or not low_ok or (maximum is not None and number > maximum):
        bound = f"above {minimum:g}" if exclusive else f"at least {minimum:g}"
        upper = f" and at most {maximum:g}" if maximum is not None else ""
        raise ArgenError(f"{_flag(name)} must be a finite number {bound}{upper}, got {value!r}")
    return number


def run_directory(name: str, value: object) -> str:
    """A run directory: new, or an existing directory (to resume); an existing file is refused."""
    path = str(value)
    if not path:
        raise ArgenError(f"{_flag(name)} needs a directory name")
    if Path(path).exists() and not Path(path).is_dir():
        raise ArgenError(f"{_flag(name)} {path} is an existing file, not a run directory: choose another --out")
    return path


def _positive_integer(name: str, value: object) -> int:
    return whole_number(name, value, minimum=1)


def _setting(default: object, help: str, check: Callable[[str, object], object] | None = None, **more: object):
    """A field with its help text (shown by --help with the default) and its check (flags, TOML and Python)."""
    return field(default=default, metadata={"help": help, "check": check, **more})


@dataclass
class TrainingConfig:
    """How to train (not what): budgets, optimizer, schedule, checkpoints. Shared by every trainer."""

    out: str = field(metadata={"help": "run directory; rerunning on it resumes (see --fresh)", "check": run_directory})
    steps: int | None = _setting(None, "stop after this many optimizer steps", _positive_integer)
    epochs: float | None = _setting(
        None, "stop after this many passes over the data", lambda n, v: finite_number(n, v, minimum=0, exclusive=True)
    )
    minutes: float | None = _setting(
        None,
        "stop after this many minutes of training (summed over resumes)",
        lambda n, v: finite_number(n, v, minimum=0, exclusive=True),
    )
    batch_size: int = _setting(128, "global batch size (split over the processes)", _positive_integer)
    learning_rate: float = _setting(
        1e-3, "peak AdamW learning rate", lambda n, v: finite_number(n, v, minimum=0, exclusive=True)
    )
    weight_decay: float = _setting(
        0.0, "AdamW weight decay (not on biases, norms, embeddings)", lambda n, v: finite_number(n, v, minimum=0)
    )
    warmup_steps: int = _setting(
        100, "linear learning-rate warmup over this many steps", lambda n, v: whole_number(n, v, minimum=0)
    )
    final_learning_rate_ratio: float = _setting(
        0.1,
        "the cosine decay ends at this fraction of the learning rate",
        lambda n, v: finite_number(n, v, minimum=0, maximum=1),
    )
    grad_clip: float = _setting(
        1.0, "max gradient norm (0 disables clipping)", lambda n, v: finite_number(n, v, minimum=0)
    )
    ema_decay: float = _setting(
        0.999, "decay of the weights' moving average (0 disables EMA)", lambda n, v: _ema_decay(n, v)
    )
    seed: int = _setting(
        0, "seeds the initial weights and the data order", lambda n, v: whole_number(n, v, minimum=0, maximum=MAX_SEED)
    )
    save_every: int = _setting(1000, "checkpoint every N steps", _positive_integer)
    keep_every: int | None = _setting(
        None, "also keep a copy of the weights every N steps in OUT/snapshots/step-N", _positive_integer
    )
    log_every: int = _setting(20, "append to metrics.jsonl every N steps", _positive_integer)
    preview_every: int = _setting(
        500,
        "write a sample grid (generators) or reconstructions (tokenizers) to OUT/previews every N steps (0: never)",
        lambda n, v: whole_number(n, v, minimum=0),
    )
    tensorboard: bool = _setting(False, "also log to OUT/tensorboard (needs the tensorboard extra)")
    device: str | None = _setting(None, "cpu or cuda (default: cuda when available)", choices=("cpu", "cuda"))
    fresh: bool = _setting(False, "ignore an existing checkpoint in --out and start over")
    progress: bool = _setting(True, "show a progress bar (--no-progress hides it)", flag="--no-progress")
    # torch.compile the model (the transformer's body, or a module's forward); flag in the "speed" group.
    compile: bool = _setting(False, "torch.compile the model", group="speed")
    # "bf16": the forward pass and the loss under bfloat16 autocast (argen.model); flag in the "speed" group.
    precision: str = _setting("fp32", "fp32, or bf16 autocast", group="speed")

    def __post_init__(self) -> None:
        check_training(self)


def _ema_decay(name: str, value: object) -> float:
    decay = finite_number(name, value, minimum=0)
    if decay >= 1:
        raise ArgenError(f"{_flag(name)} must be below 1 (0 disables EMA), got {value!r}")
    return decay


def check_training(training: TrainingConfig) -> None:
    """Apply every field's check (the same ones the flags and TOML recipes go through); one-line refusals."""
    for setting in fields(training):
        check = setting.metadata.get("check")
        value = getattr(training, setting.name)
        if check is not None and value is not None:
            check(setting.name, value)
        choices = setting.metadata.get("choices")
        if choices is not None and value is not None and value not in choices:
            raise ArgenError(f"{_flag(setting.name)} must be one of {', '.join(choices)}, got {value!r}")


def learning_rate_at(step: int, *, training: TrainingConfig, horizon: int | None) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``final_learning_rate_ratio`` at ``horizon``."""
    base = training.learning_rate
    if step < training.warmup_steps:
        return base * (step + 1) / training.warmup_steps
    if horizon is None or horizon <= training.warmup_steps:
        return base
    progress = min(1.0, (step - training.warmup_steps) / (horizon - training.warmup_steps))
    floor = base * training.final_learning_rate_ratio
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))
