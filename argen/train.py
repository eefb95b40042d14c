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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from argen.checkpoint import (
    STATE_NAME,
    capture_rng_state,
    config_to_dict,
    load_train_state,
    restore_rng_state,
    run_directory_lock,
    save_release,
    save_train_state,
)
from argen.dist import DistributedContext, setup
from argen.errors import ArgenError
from argen.transformer import autocast, check_compile, check_precision

METRICS_NAME = "metrics.jsonl"

# Settings that may change between a run and its resume: budgets and logging. Anything else changing would make
# the resumed run a different experiment, so it is refused.
RESUMABLE_CHANGES = {
    "steps", "epochs", "minutes", "save_every", "keep_every", "log_every", "progress", "device", "fresh", "out",
    "compile", "precision",
}  # fmt: skip


@dataclass
class TrainingConfig:
    """How to train (not what): budgets, optimizer, schedule, checkpoints. Shared by every trainer."""

    out: str
    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    final_learning_rate_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    save_every: int = 1000
    keep_every: int | None = None  # also keep a copy of the release every N steps in OUT/snapshots/step-N
    log_every: int = 20
    device: str | None = None
    fresh: bool = False
    progress: bool = True
    compile: bool = False  # torch.compile the model (the transformer's body, or a module's forward)
    precision: str = "fp32"  # "bf16": the forward pass and the loss under bfloat16 autocast (argen.transformer)


@dataclass
class TrainingTask:
    """What a trainer trains. ``tensors`` share their first dimension (the examples); a batch is a dict of
    ``tensor[indices]``. ``loss(model, batch)`` returns a scalar loss and a dict of floats to log."""

    kind: str
    config: Any
    build_model: Callable[[], torch.nn.Module]  # called after seeding, so --seed fixes the initial weights
    tensors: dict[str, torch.Tensor]
    loss: Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
    release_directory: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Parameters excluded from weight decay: biases, norms, embeddings (anything with fewer than 2 dims).
    no_decay: Callable[[str, torch.nn.Parameter], bool] = lambda name, parameter: parameter.ndim < 2


@dataclass
class FitResult:
    step: int
    reason: str  # "finished", "time budget", "interrupted"
    out: Path
    last_logs: dict[str, float]
    is_main: bool = True  # False on the DDP ranks that do not write files


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


def _check_budget(training: TrainingConfig) -> None:
    check_precision(training.precision, training.device or "cpu")
    if training.steps is None and training.epochs is None and training.minutes is None:
        raise ArgenError("no training budget: give --steps N, --epochs E or --minutes M (or several; the first wins)")
    for name in ("steps", "epochs", "minutes"):
        value = getattr(training, name)
        if value is not None and value <= 0:
            raise ArgenError(f"--{name} must be positive, got {value}")


def _incompatible_settings(saved: dict[str, Any], asked: dict[str, Any], *, ignore: set[str]) -> list[str]:
    keys = sorted((set(saved) | set(asked)) - ignore)
    return [
        f"{key}: {saved.get(key)!r} in the run, {asked.get(key)!r} now"
        for key in keys
        if saved.get(key) != asked.get(key)
    ]


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


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from, so the log has each step once."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


@dataclass
class _Run:
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

    @property
    def state_path(self) -> Path:
        return self.out / STATE_NAME

    @property
    def metrics_path(self) -> Path:
        return self.out / METRICS_NAME

    def identity(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(component config, training config) as plain dicts: what a resumed run must match."""
        return config_to_dict(self.task.config), asdict(self.training)

    def resume(self) -> None:
        """Continue from ``OUT/train_state.pt`` if there is one (and not --fresh); refuse a different run."""
        task, out = self.task, self.out
        component, asked = self.identity()
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
        changed = _incompatible_settings(state["component"], component, ignore=set())
        changed += _incompatible_settings(state["training"], asked, ignore=RESUMABLE_CHANGES)
        if changed:
            raise ArgenError(
                f"{out} holds a run with other settings ({'; '.join(changed[:3])}); rerun with the same settings "
                "to resume, or pass --fresh to start over"
            )
        # A model may rename parameters between versions (Transformer.heads → output_heads) and map old names.
        upgrade = getattr(self.model, "upgrade_state_dict", lambda state_dict: state_dict)
        self.model.load_state_dict(upgrade(state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(upgrade(state["ema"]))
        self.step, self.elapsed, self.horizon = state["step"], state["elapsed_seconds"], state["horizon"]
        restore_rng_state(state["rng"])
        if self.context.is_main:
            _truncate_metrics(self.metrics_path, self.step)
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
        save_train_state(self.state_path, state)
        weights = ema.state_dict() if ema is not None else self.model.state_dict()
        extra = dict(self.task.extra, step=self.step, complete=final)
        release = Path(self.task.release_directory) if self.task.release_directory else self.out
        save_release(release, kind=self.task.kind, config=self.task.config, state_dict=weights, extra=extra)
        keep_every = self.training.keep_every
        if keep_every and self.step > 0 and self.step % keep_every == 0:
            keep_snapshot(self.out, release, self.step)

    def optimizer_step(self, trained: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, dict, float]:
        """One update at the scheduled learning rate; returns (mean loss over ranks, logs, gradient norm).

        A non-finite loss or gradient norm raises `TrainingDiverged` before the weights change.
        """
        training, out = self.training, self.out
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(self.step, training=training, horizon=self.horizon)
        trained.train()
        with autocast(training.precision, self.context.device):
            loss, logs = self.task.loss(trained, batch)
        mean_loss = float(self.context.mean(loss.detach()))
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(
                f"loss became {mean_loss} at step {self.step}: training stopped, the last checkpoint in {out} is "
                "intact; lower --learning-rate or raise --warmup-steps and rerun to resume from it"
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
                f"gradient norm became non-finite at step {self.step}: training stopped, the last checkpoint in "
                f"{out} is intact; lower --learning-rate and rerun to resume from it"
            ) from None
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        return mean_loss, logs, float(grad_norm)


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


def _build_run(task: TrainingTask, training: TrainingConfig, context: DistributedContext, out: Path) -> _Run:
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
    return _Run(task=task, training=training, context=context, model=model, optimizer=optimizer, ema=ema, out=out)


def _budget_steps(training: TrainingConfig, steps_per_epoch: int) -> int | None:
    """The step budget of --steps and --epochs (the smaller), None with only a time budget."""
    budget = training.steps
    if training.epochs is not None:
        epoch_steps = max(1, math.ceil(training.epochs * steps_per_epoch))
        budget = epoch_steps if budget is None else min(budget, epoch_steps)
    return budget


class _Log:
    """The progress bar and ``metrics.jsonl``: the mean loss and throughput of every ``--log-every`` steps."""

    def __init__(self, run: _Run, *, budget_steps: int | None, steps_per_epoch: int) -> None:
        self.run, self.budget_steps, self.steps_per_epoch = run, budget_steps, steps_per_epoch
        self.bar = tqdm(
            total=budget_steps,
            initial=run.step,
            desc=f"train {run.task.kind}",
            unit="step",
            disable=not (run.context.is_main and run.training.progress),
            dynamic_ncols=True,
        )
        self.last_logs: dict[str, float] = {}
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
        self.bar.update(1)
        if step % run.training.log_every and step != self.budget_steps:
            return
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
        }
        if run.context.is_main:
            with open(run.metrics_path, "a") as stream:
                stream.write(json.dumps(record) + "\n")
        shown = {"loss": f"{record['loss']:.4f}", "img/s": f"{record['examples_per_second']:.0f}"}
        shown.update({name: f"{value:.3g}" for name, value in logs.items()})
        self.bar.set_postfix(shown, refresh=False)
        self._reset(now)


def _stop_reason(run: _Run, interrupt: _InterruptFlag) -> str | None:
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
    _check_budget(training)
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
    if training.compile:
        check_compile()
        run.model.compile()  # in place: the Transformer compiles its body, other modules their forward
    trained = torch.nn.parallel.DistributedDataParallel(run.model) if context.enabled else run.model
    log = _Log(run, budget_steps=budget_steps, steps_per_epoch=steps_per_epoch)
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
            reason = _stop_reason(run, interrupt) or "finished"
            if reason == "finished" and run.step % training.save_every == 0:
                run.save(final=False)
    log.bar.close()
    run.save(final=reason in ("finished", "time budget"))
    context.barrier()
    if context.is_main:
        tqdm.write(f"{task.kind} training {reason} at step {run.step}; checkpoint in {out}")
    return FitResult(step=run.step, reason=reason, out=out, last_logs=log.last_logs, is_main=context.is_main)


def keep_snapshot(out: Path, release_directory: Path, step: int) -> Path:
    """Copy the release just saved to OUT/snapshots/step-N (with the model directory's tokenizer copy, so a snapshot
    of a generator is itself a model directory): learning curves are evaluated on these after training."""
    import shutil

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


# ---------------------------------------------------------------------------------------------------------------
# Trainers on the shared loop


def train_tokenizer(
    data: str,
    *,
    tokenizer,
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
    from dataclasses import replace

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

    task = TrainingTask(
        kind="tokenizer",
        config=config,
        build_model=lambda: build_tokenizer(config),
        tensors={"images": train_set.images},
        loss=tokenizer_loss,
        extra={"data": data},
    )
    return fit(task, training, on_step=on_step)


def train_generator(
    tokenizer_directory: str,
    order_name: str,
    data: str,
    *,
    training: TrainingConfig,
    preset: str = "3m",
    data_dir: str | None = None,
    tokens: str | None = None,
    transformer_overrides: dict[str, Any] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Train a transformer under ``order_name`` on the ids of ``data`` as encoded by the tokenizer in
    ``tokenizer_directory``. ``OUT`` becomes a model directory: ``OUT/tokenizer`` (a copy), ``OUT/generator``.

    The ids come from a token cache: ``tokens`` if given, else ``OUT/tokens-train.safetensors``, made on the first
    run (rank 0 encodes, the others wait) and refused if another tokenizer made it. The run directory is locked
    from before the cache is made until training ends.
    """
    _check_budget(training)
    context = setup(training.device)
    with run_directory_lock(training.out) if context.is_main else contextlib.nullcontext():
        task = generator_task(
            tokenizer_directory, order_name, data, training=training, context=context, preset=preset,
            data_dir=data_dir, tokens=tokens, transformer_overrides=transformer_overrides,
        )  # fmt: skip
        return fit(task, training, context=context, on_step=on_step)


def cached_token_ids(
    tokenizer: Any, *, fingerprint: str, data: str, cache: Path, data_dir: str | None, context: DistributedContext,
    progress: bool,
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
    transformer_overrides: dict[str, Any] | None,
) -> TrainingTask:
    """What `train_generator` trains: the transformer for the order on the tokenizer, fed the cached ids."""
    import torch.nn.functional as F

    from argen.checkpoint import GENERATOR_KIND, GeneratorConfig, copy_release, release_fingerprint
    from argen.orders import build_order
    from argen.tokenizers import load_tokenizer
    from argen.transformer import Transformer, preset_config

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
    )
