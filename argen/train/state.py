"""One run's state: resume from and save to ``OUT/train_state.pt``, the optimizer step, the EMA, the divergence stop.

A checkpoint is the training state (model, optimizer, EMA, step, configs, RNG states; plain types only, loaded with
``weights_only=True``) and a release of the (EMA) weights. Writing it is where the disk fills up or permissions
bite, so those errors are named here in one line; temporary files left by a write that was killed are removed
when the next run on the directory starts (it holds the directory's lock, so no other write is in flight).
"""

from __future__ import annotations

import errno
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from argen.checkpoint import (
    STATE_NAME,
    capture_rng_state,
    config_to_dict,
    load_train_state,
    restore_rng_state,
    save_release,
    save_train_state,
)
from argen.dist import DistributedContext
from argen.errors import ArgenError
from argen.model import autocast
from argen.train.config import TrainingConfig, learning_rate_at
from argen.train.task import METRICS_NAME, Batch, TrainingTask

# Settings that may change between a run and its resume: budgets and logging. Anything else changing would make
# the resumed run a different experiment, so it is refused.
RESUMABLE_CHANGES = {
    "steps", "epochs", "minutes", "save_every", "keep_every", "log_every", "progress", "device", "fresh", "out",
    "compile", "precision", "preview_every", "tensorboard",
}  # fmt: skip


class TrainingDiverged(ArgenError):
    """The loss or the gradient norm became NaN or infinite."""


class ExponentialMovingAverage:
    """EMA of a model's floating-point parameters and buffers, with the usual short-run warmup of the decay.

    The warmup, decay_t = min(decay, (1 + t) / (10 + t)), keeps the average from being dominated by the random
    initial weights in runs of a few hundred steps, which are the common case on a CPU.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[name].lerp_(value.detach(), 1 - decay)
            else:
                self.shadow[name].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.shadow[name].copy_(value)


def _flatten(settings: dict, prefix: str = "") -> dict[str, object]:
    """{"transformer": {"width": 64}} → {"transformer.width": 64}: a change is named by its own key."""
    flat: dict[str, object] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_settings(saved: dict, asked: dict, *, ignore: set[str] = frozenset()) -> list[str]:
    """ "key: saved in the run, asked now" for each (nested, dotted) key whose value differs, ``ignore`` left out."""
    saved, asked = _flatten(saved), _flatten(asked)
    keys = sorted(key for key in set(saved) | set(asked) if key.split(".")[0] not in ignore)
    return [f"{key}: {saved.get(key)!r} in the run, {asked.get(key)!r} now" for key in keys
            if saved.get(key) != asked.get(key)]  # fmt: skip


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files `argen.checkpoint.atomic_write` leaves when a write is killed mid-way."""
    removed = []
    for temporary in out.glob(".*.tmp"):
        if temporary.is_file():
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    for temporary in out.glob("*/.*.tmp"):  # the generator's release lives in OUT/generator
        if temporary.is_file():
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


def write_error(out: Path, error: BaseException) -> ArgenError:
    """A checkpoint write that failed, named in one line: disk full, no permission, or what the OS said."""
    number = getattr(error, "errno", None)
    if number in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(out).free / 2**20 if out.exists() else float("nan")
        return ArgenError(
            f"the disk holding {out} is full ({free:.0f} MiB free): the checkpoint was not written, the previous one "
            "is intact; free some space and rerun to resume"
        )
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ArgenError(f"no permission to write the checkpoint in {out} ({error.strerror}); choose another --out")
    if isinstance(error, OSError):
        return ArgenError(f"could not write the checkpoint in {out}: {error.strerror or error}")
    # torch.save reports a full disk as "[enforce fail at inline_container.cc] ... unexpected pos".
    free = shutil.disk_usage(out).free / 2**20 if out.exists() else float("nan")
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ArgenError(
        f"could not write the checkpoint in {out} ({free:.0f} MiB free; torch says: {first_line[:120]}); "
        "the previous checkpoint is intact"
    )


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from, so the log has each step once."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


@dataclass
class Run:
    """One training run's moving parts: what a checkpoint holds, and where the run stands."""

    task: TrainingTask
    training: TrainingConfig
    context: DistributedContext
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema: ExponentialMovingAverage | None
    out: Path
    step: int = 0
    elapsed: float = 0.0
    horizon: int | None = None  # the step at which the cosine schedule ends
    saved_step: int | None = None  # the step of the checkpoint now in OUT written or resumed by this run

    @property
    def state_path(self) -> Path:
        return self.out / STATE_NAME

    @property
    def metrics_path(self) -> Path:
        return self.out / METRICS_NAME

    def identity(self) -> tuple[dict[str, object], dict[str, object]]:
        """(component config, training config) as plain dicts: what a resumed run must match."""
        return config_to_dict(self.task.config), asdict(self.training)

    def resume(self) -> None:
        """Continue from ``OUT/train_state.pt`` if there is one (and not --fresh); refuse a different run."""
        task, out = self.task, self.out
        component, asked = self.identity()
        if self.context.is_main and out.is_dir():
            for temporary in remove_stale_temporaries(out):
                tqdm.write(f"removed {temporary.name}, left by a checkpoint write that was stopped")
        if not self.state_path.exists() or self.training.fresh:
            if self.context.is_main:
                out.mkdir(parents=True, exist_ok=True)
                self.metrics_path.unlink(missing_ok=True)
            return
        state = load_train_state(self.state_path)
        if state.get("kind") != task.kind:
            raise ArgenError(
                f"{out} holds a '{state.get('kind')}' run, not a '{task.kind}' run; choose another --out or pass "
                "--fresh"
            )
        changed = changed_settings(state["component"], component)
        changed += changed_settings(state["training"], asked, ignore=RESUMABLE_CHANGES)
        if changed:
            more = f"; and {len(changed) - 4} more" if len(changed) > 4 else ""
            raise ArgenError(
                f"{out} holds a run with other settings ({'; '.join(changed[:4])}{more}); rerun with the same "
                "settings to resume, pass --fresh to start over, or choose a new --out"
            )
        # A model may rename parameters between versions (Transformer.heads → output_heads) and map old names.
        upgrade = getattr(self.model, "upgrade_state_dict", lambda state_dict: state_dict)
        self.model.load_state_dict(upgrade(state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(upgrade(state["ema"]))
        self.step, self.elapsed, self.horizon = state["step"], state["elapsed_seconds"], state["horizon"]
        self.saved_step = self.step
        restore_rng_state(state["rng"])
        if self.context.is_main:
            truncate_metrics(self.metrics_path, self.step)
            tqdm.write(f"resuming {task.kind} training in {out} from step {self.step}")

    def save(self, *, final: bool) -> None:
        """The training state and a release of the (EMA) weights; only rank 0 writes."""
        if not self.context.is_main:
            return
        component, asked = self.identity()
        ema = self.ema
        state = {
            "kind": self.task.kind,
            "component": component,
            "training": asked,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": ema.state_dict() if ema is not None else {},
            "step": self.step,
            "elapsed_seconds": self.elapsed,
            "horizon": self.horizon,
            "rng": capture_rng_state(),
        }
        weights = ema.state_dict() if ema is not None else self.model.state_dict()
        extra = dict(self.task.extra, step=self.step, complete=final)
        release = Path(self.task.release_directory) if self.task.release_directory else self.out
        try:
            save_train_state(self.state_path, state)
            save_release(release, kind=self.task.kind, config=self.task.config, state_dict=weights, extra=extra)
            keep_every = self.training.keep_every
            if keep_every and self.step > 0 and self.step % keep_every == 0:
                keep_snapshot(self.out, release, self.step)
        except OSError as error:
            raise write_error(self.out, error) from None
        except RuntimeError as error:
            if "inline_container" not in str(error) and "unexpected pos" not in str(error):
                raise
            raise write_error(self.out, error) from None
        self.saved_step = self.step

    def divergence_advice(self) -> str:
        """What is true about OUT's checkpoint after a divergence, and the way on (resuming would diverge again)."""
        out = self.out
        if self.saved_step is not None:
            where = f"the checkpoint of step {self.saved_step} in {out} is intact"
        elif self.state_path.exists():
            where = f"{out} still holds the checkpoint of the earlier run (--fresh had not replaced it yet)"
        else:
            where = f"no checkpoint was written yet (the first was due at step {self.training.save_every})"
        return (
            f"{where}; rerunning the same settings would diverge again: rerun with --fresh and a lower "
            "--learning-rate, more --warmup-steps or a --grad-clip, or put the changed recipe in a new --out"
        )

    def optimizer_step(self, trained: torch.nn.Module, batch: Batch) -> tuple[float, dict[str, float], float]:
        """One update at the scheduled learning rate; returns (mean loss over ranks, logs, gradient norm).

        A non-finite loss or gradient norm raises `TrainingDiverged` before the weights change.
        """
        training = self.training
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(self.step, training=training, horizon=self.horizon)
        trained.train()
        with autocast(training.precision, self.context.device):
            loss, logs = self.task.loss(trained, batch)
        mean_loss = float(self.context.mean(loss.detach()))
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(
                f"loss became {mean_loss} at step {self.step}: training stopped; {self.divergence_advice()}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        try:
            grad_norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(),
                max_norm=training.grad_clip if training.grad_clip > 0 else float("inf"),
                error_if_nonfinite=True,
            )
        except RuntimeError:
            raise TrainingDiverged(
                f"gradient norm became non-finite at step {self.step}: training stopped; {self.divergence_advice()}"
            ) from None
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        return mean_loss, logs, float(grad_norm)


def keep_snapshot(out: Path, release_directory: Path, step: int) -> Path:
    """Copy the release just saved to OUT/snapshots/step-N (with the model directory's tokenizer copy, so a snapshot
    of a generator is itself a model directory): learning curves are evaluated on these after training."""
    snapshot = out / "snapshots" / f"step-{step}"
    shutil.rmtree(snapshot, ignore_errors=True)
    if release_directory == out:  # a tokenizer or classifier: the release files sit in OUT itself
        snapshot.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy2(out / name, snapshot / name)
        return snapshot
    for part in (release_directory, out / "tokenizer"):
        if part.is_dir():
            shutil.copytree(part, snapshot / part.name)
    return snapshot
