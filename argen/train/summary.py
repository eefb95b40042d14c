"""The start-of-run summary every trainer prints: one short block, the same format for all of them.

The loop knows the budget, the batch, the schedule and the model's size; the trainer adds what only it knows
(`TrainingTask.summary`: the data's classes and image size, the preset, tokens per image).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from argen.train.state import Run


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} minutes" if seconds >= 60 else f"{seconds:.0f} seconds"


def _budget(run: Run, *, budget_steps: int | None, steps_per_epoch: int) -> str:
    training = run.training
    parts = []
    if budget_steps is not None:
        parts.append(f"{budget_steps} steps = {budget_steps / steps_per_epoch:.2f} epochs")
    if training.minutes is not None:
        parts.append(f"at most {training.minutes:g} minutes")
    if run.step > 0 and run.elapsed > 0 and budget_steps is not None:
        left = run.elapsed / run.step * max(budget_steps - run.step, 0)
        parts.append(f"about {_duration(left)} left at the speed so far")
    elif training.minutes is None:
        parts.append("time estimated after the first steps (on the progress bar)")
    return "; ".join(parts)


def summary_lines(run: Run, *, budget_steps: int | None, steps_per_epoch: int) -> list[str]:
    """The summary block's lines: data, model, tokens (generators), batch, schedule, budget, output."""
    task, training = run.task, run.training
    examples = next(iter(task.tensors.values())).shape[0]
    parameters = sum(parameter.numel() for parameter in run.model.parameters())
    data = f"{examples} examples" + (f", {task.summary['data']}" if task.summary.get("data") else "")
    size = f"{parameters / 1e6:.2f} M" if parameters >= 100_000 else f"{parameters:,}"
    model = f"{size} parameters" + (f", {task.summary['model']}" if task.summary.get("model") else "")
    horizon = f"cosine to {training.learning_rate * training.final_learning_rate_ratio:.3g}"
    horizon += f" at step {run.horizon}" if run.horizon is not None else " over the time budget"
    warmup = f"warmup {training.warmup_steps} steps"
    if budget_steps is not None and training.warmup_steps >= budget_steps:
        warmup += " (the whole budget: the learning rate never reaches its peak)"
    schedule = (
        f"learning rate {training.learning_rate:g}, {warmup}, {horizon}; "
        f"weight decay {training.weight_decay:g}, EMA {training.ema_decay:g}, gradient clip {training.grad_clip:g}"
    )
    rows = [("data", data), ("model", model)]
    if task.summary.get("tokens"):
        rows.append(("tokens", task.summary["tokens"]))
    if task.summary.get("chosen"):
        rows.append(("chosen", task.summary["chosen"]))
    rows += [
        ("batch", f"{training.batch_size} ({steps_per_epoch} steps per epoch)"),
        ("schedule", schedule),
        ("budget", _budget(run, budget_steps=budget_steps, steps_per_epoch=steps_per_epoch)),
        ("output", f"{run.out}" + (f" (resuming at step {run.step})" if run.step else "")),
    ]
    return [f"train {task.kind}"] + [f"  {name:<10}{value}" for name, value in rows]


def print_summary(run: Run, *, budget_steps: int | None, steps_per_epoch: int) -> None:
    for line in summary_lines(run, budget_steps=budget_steps, steps_per_epoch=steps_per_epoch):
        tqdm.write(line)
