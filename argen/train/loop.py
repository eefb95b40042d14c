"""The training loop every argen trainer shares: budgets, schedule, EMA, resume, DDP, divergence stop.

A trainer (classifier, tokenizer, generator) describes *what* to train as a `TrainingTask`: the component
kind and config written to ``config.json``, the model, the training tensors, and a loss function. `fit` does
the rest, top to bottom:

1. resume from ``OUT/train_state.pt`` when it exists (``--fresh`` starts over), refusing a state whose
   component config differs from the one asked for;
2. each step takes the next batch of a seeded per-epoch permutation (``DistributedSampler``, so rank r of N
   sees every N-th index and the union of the ranks' batches is exactly the 1-process batch);
3. AdamW with linear warmup then cosine decay; gradient norm clipping that raises on a non-finite norm;
4. a loss that is not finite stops training with a one-line error and leaves the last checkpoint intact;
5. an EMA of the weights, a tqdm bar with loss and throughput, ``metrics.jsonl`` every ``--log-every`` steps;
6. a checkpoint every ``--save-every`` steps, on Ctrl-C, on ``--minutes`` running out, and at the end: the
   training state (model, optimizer, EMA, step, configs, RNG states) and a release (EMA weights).

Resume is exact: the data position is a function of the step, and RNG states are restored, so N steps straight
and N/2 + stop + N/2 give bit-identical weights on CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from argen.checkpoint import run_directory_lock
from argen.dist import DistributedContext, setup
from argen.errors import ArgenError
from argen.model import check_compile, check_precision
from argen.train.config import TrainingConfig, check_training, learning_rate_at
from argen.train.state import ExponentialMovingAverage, Run, TrainingDiverged
from argen.train.summary import print_summary
from argen.train.task import FitResult, TrainingTask
from argen.train.watch import Watcher


def check_budget(training: TrainingConfig) -> None:
    """Refuse a config with a bad setting (again: it may have been changed since it was made) or no budget."""
    check_training(training)
    check_precision(training.precision, training.device or "cpu")
    if training.steps is None and training.epochs is None and training.minutes is None:
        raise ArgenError("no training budget: give --steps N, --epochs E or --minutes M (or several; the first wins)")
    for name in ("steps", "epochs", "minutes"):
        value = getattr(training, name)
        if value is not None and value <= 0:
            raise ArgenError(f"--{name} must be positive, got {value}")


class _InterruptFlag:
    """Turns the first Ctrl-C into a request to checkpoint and stop at the next step boundary.

    Stopping mid-step could leave the weights half-updated; a second Ctrl-C falls through to Python's default
    and stops at once (the last periodic checkpoint is still intact).
    """

    def __init__(self) -> None:
        self.requested = False
        self.previous = None

    def __enter__(self) -> _InterruptFlag:
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _epoch_sampler(task: TrainingTask, training: TrainingConfig, context: DistributedContext):
    """(the seeded per-epoch permutation of the examples, the per-rank batch size, optimizer steps per epoch).

    ``DistributedSampler`` with drop_last: rank r of N sees every N-th index, and the union of the ranks' batches is
    exactly the 1-process batch.
    """
    examples = next(iter(task.tensors.values())).shape[0]
    if any(tensor.shape[0] != examples for tensor in task.tensors.values()):
        raise ValueError("all training tensors must share their first dimension")
    if training.batch_size % context.world_size:
        raise ArgenError(
            f"--batch-size {training.batch_size} does not split over {context.world_size} processes; "
            "use a multiple of the process count"
        )
    local_batch = training.batch_size // context.world_size
    sampler = DistributedSampler(
        range(examples), num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=training.seed,
        drop_last=True,
    )  # fmt: skip
    steps_per_epoch = len(sampler) // local_batch
    if steps_per_epoch == 0:
        raise ArgenError(f"--batch-size {training.batch_size} is larger than the {examples} training examples")
    return sampler, local_batch, steps_per_epoch


def _build_run(task: TrainingTask, training: TrainingConfig, context: DistributedContext, out: Path) -> Run:
    """Model (seeded, so --seed fixes the initial weights), AdamW without decay on ``task.no_decay``, EMA."""
    torch.manual_seed(training.seed)
    model = task.build_model().to(context.device)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if task.no_decay(name, parameter) else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": training.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=training.learning_rate,
        betas=(0.9, 0.95),
        fused=False,
    )
    ema = ExponentialMovingAverage(model, training.ema_decay) if training.ema_decay > 0 else None
    return Run(task=task, training=training, context=context, model=model, optimizer=optimizer, ema=ema, out=out)


def _budget_steps(training: TrainingConfig, steps_per_epoch: int) -> int | None:
    """The step budget of --steps and --epochs (the smaller), None with only a time budget."""
    budget = training.steps
    if training.epochs is not None:
        epoch_steps = max(1, math.ceil(training.epochs * steps_per_epoch))
        budget = epoch_steps if budget is None else min(budget, epoch_steps)
    return budget


class _Log:
    """The progress bar and ``metrics.jsonl``: the mean loss and throughput of every ``--log-every`` steps."""

    def __init__(self, run: Run, *, budget_steps: int | None, steps_per_epoch: int, watcher: Watcher | None) -> None:
        self.run, self.budget_steps, self.steps_per_epoch, self.watcher = run, budget_steps, steps_per_epoch, watcher
        self.bar = tqdm(
            total=budget_steps,
            initial=run.step,
            desc=f"train {run.task.kind}",
            unit="step",
            disable=not (run.context.is_main and run.training.progress),
            dynamic_ncols=True,
        )
        self.last_logs: dict[str, float] = {}
        self.latest: tuple[dict, float, float] = ({}, 0.0, 0.0)  # the last step's logs, gradient norm, learning rate
        self._reset(time.perf_counter())

    def _reset(self, now: float) -> None:
        self.loss, self.count, self.examples, self.start = 0.0, 0, 0, now

    def add(self, mean_loss: float, logs: dict, grad_norm: float, learning_rate: float) -> None:
        """Count one finished step; write a record at the interval's end or the budget's."""
        run, step = self.run, self.run.step
        self.loss += mean_loss
        self.count += 1
        self.examples += run.training.batch_size
        self.last_logs = {"loss": mean_loss, **logs}
        self.latest = (logs, grad_norm, learning_rate)
        self.bar.update(1)
        if step % run.training.log_every and step != self.budget_steps:
            return
        self._write({})

    def _write(self, extra: dict[str, float]) -> None:
        """Append the record of the steps counted since the last one (with ``extra``), and start a new interval."""
        run, step = self.run, self.run.step
        logs, grad_norm, learning_rate = self.latest
        now = time.perf_counter()
        record = {
            "step": step,
            "epoch": round(step / self.steps_per_epoch, 4),
            "loss": self.loss / self.count,
            "learning_rate": learning_rate,
            "grad_norm": grad_norm,
            "examples_per_second": self.examples / max(now - self.start, 1e-9),
            "elapsed_seconds": round(run.elapsed, 3),
            **{name: float(value) for name, value in logs.items()},
            **extra,
        }
        if run.context.is_main:
            with open(run.metrics_path, "a") as stream:
                stream.write(json.dumps(record) + "\n")
            if self.watcher is not None:
                self.watcher.record(record)
        shown = {"loss": f"{record['loss']:.4f}", "img/s": f"{record['examples_per_second']:.0f}"}
        shown.update({name: f"{value:.3g}" for name, value in logs.items()})
        self.bar.set_postfix(shown, refresh=False)
        self._reset(now)

    def validation(self, value: float) -> None:
        """Put the checkpoint's validation loss in the record of its step: the record just written, or the one of
        the steps since (written now), so every record stays a full training record (readers take the last one)."""
        run = self.run
        if self.count:
            self._write({"validation_loss": value})
            return
        lines = run.metrics_path.read_text().splitlines() if run.metrics_path.exists() else []
        last = json.loads(lines[-1]) if lines else {}
        if last.get("step") == run.step:
            last["validation_loss"] = value
            run.metrics_path.write_text("".join(line + "\n" for line in lines[:-1]) + json.dumps(last) + "\n")
            if self.watcher is not None:
                self.watcher.record({"step": run.step, "validation_loss": value})


def _validate(watcher: Watcher | None, log: _Log) -> None:
    value = watcher.validate() if watcher is not None else None
    if value is not None:
        log.validation(value)


def _stop_reason(run: Run, interrupt: _InterruptFlag) -> str | None:
    """ "interrupted", "time budget" or None, agreed by every rank (or the others would wait forever)."""
    minutes = run.training.minutes
    stop = torch.tensor([float(minutes is not None and run.elapsed >= minutes * 60), float(interrupt.requested)])
    if run.context.enabled:
        torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
    if stop[1] > 0:
        return "interrupted"
    return "time budget" if stop[0] > 0 else None


def fit(
    task: TrainingTask,
    training: TrainingConfig,
    *,
    context: DistributedContext | None = None,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``task`` under ``training`` and return where it stopped. See the module docstring for the flow.

    ``on_step(step)`` is called after every completed step (tests use it to interrupt a run). Rank 0 holds the run
    directory's lock (`argen.checkpoint.run_directory_lock`) from start to end.
    """
    check_budget(training)
    context = context or setup(training.device)
    out = Path(training.out)
    with run_directory_lock(out) if context.is_main else contextlib.nullcontext():
        return _fit(task, training, context=context, out=out, on_step=on_step)


def _fit(
    task: TrainingTask,
    training: TrainingConfig,
    *,
    context: DistributedContext,
    out: Path,
    on_step: Callable[[int], None] | None,
) -> FitResult:
    sampler, local_batch, steps_per_epoch = _epoch_sampler(task, training, context)
    run = _build_run(task, training, context, out)
    run.resume()
    budget_steps = _budget_steps(training, steps_per_epoch)
    if budget_steps is not None:
        run.horizon = budget_steps
    if context.is_main:
        print_summary(run, budget_steps=budget_steps, steps_per_epoch=steps_per_epoch)
    if training.compile:
        check_compile()
        run.model.compile()  # in place: the Transformer compiles its body, other modules their forward
    trained = torch.nn.parallel.DistributedDataParallel(run.model) if context.enabled else run.model
    watcher = Watcher(run) if context.is_main else None
    log = _Log(run, budget_steps=budget_steps, steps_per_epoch=steps_per_epoch, watcher=watcher)
    reason = "finished"
    run_start = time.perf_counter() - run.elapsed
    epoch_indices, indexed_epoch = torch.empty(0, dtype=torch.long), -1
    with _InterruptFlag() as interrupt:
        # A resumed run whose time budget is already spent must not take another step (elapsed comes from the
        # saved state, so every rank agrees).
        if training.minutes is not None and run.elapsed >= training.minutes * 60:
            reason = "time budget"
        while reason == "finished" and (budget_steps is None or run.step < budget_steps):
            epoch, position = divmod(run.step, steps_per_epoch)
            if epoch != indexed_epoch:
                sampler.set_epoch(epoch)
                epoch_indices, indexed_epoch = torch.tensor(list(sampler), dtype=torch.long), epoch
            index_tensor = epoch_indices[position * local_batch : (position + 1) * local_batch]
            batch = {name: tensor[index_tensor].to(context.device) for name, tensor in task.tensors.items()}
            learning_rate = learning_rate_at(run.step, training=training, horizon=run.horizon)
            try:
                mean_loss, logs, grad_norm = run.optimizer_step(trained, batch)
            except TrainingDiverged:
                log.bar.close()
                raise
            run.elapsed = time.perf_counter() - run_start
            if run.horizon is None and run.step == 20 and training.minutes is not None:
                # Only a time budget: estimate how many steps fit so the cosine schedule ends with the budget.
                run.horizon = max(run.step + 1, int(training.minutes * 60 / (run.elapsed / run.step)))
            log.add(mean_loss, logs, grad_norm, learning_rate)
            if on_step is not None:
                on_step(run.step)
            if watcher is not None and training.preview_every and run.step % training.preview_every == 0:
                watcher.preview()
            reason = _stop_reason(run, interrupt) or "finished"
            if reason == "finished" and run.step % training.save_every == 0:
                run.save(final=False)
                _validate(watcher, log)
    log.bar.close()
    run.save(final=reason in ("finished", "time budget"))
    if watcher is not None:
        if run.step and run.step % training.save_every:  # a checkpoint at the end that the loop did not score
            _validate(watcher, log)
        if training.preview_every and run.step % training.preview_every:
            watcher.preview()
        watcher.close()
    context.barrier()
    if context.is_main:
        tqdm.write(f"{task.kind} training {reason} at step {run.step}; checkpoint in {out}")
    return FitResult(step=run.step, reason=reason, out=out, last_logs=log.last_logs, is_main=context.is_main)
