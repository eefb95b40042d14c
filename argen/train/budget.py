"""Settings that fit a time budget on the machine at hand: time a few steps, then choose preset, batch and warmup.

A fixed recipe (3m preset, batch 128, 200 warmup steps) learns in five minutes on two idle cores and never leaves
warmup on one busy thread (issue 27: 54 steps in 4 minutes, loss 6.37 against ln 1024 = 6.93). So when a run has a
time budget and the user did not set the preset, batch or warmup, `plan_for_budget` chooses them from measured
seconds per example, by three rules of thumb:

- ``MIN_STEPS`` (300) optimizer steps at least: a few hundred AdamW steps at 1e-3 are what the small presets need to
  leave the unigram plateau (loss ≈ the entropy of the code histogram) and start using the context;
- warmup at most ``WARMUP_FRACTION`` (10 %) of the steps the budget allows (and at most the recipe's), so most of
  the budget runs at a useful learning rate;
- the largest preset that gets ``MIN_STEPS`` at a batch of at least ``MIN_BATCH`` (32 images: thousands of tokens
  per step); within it, the largest batch of ``BATCHES`` that still gets them. When no preset gets them, the
  smallest preset at the smallest batch, and the reason says the budget is short.

Flags the user gave are kept as given (`plan_for_budget`'s ``given``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from argen.model import autocast
from argen.train.task import TrainingTask

MIN_STEPS = 300
WARMUP_FRACTION = 0.1
MIN_BATCH = 32
BATCHES = (128, 64, 32)
# The step timing's batch: large enough to amortise per-step overhead, small enough to time the 10m preset quickly.
PROBE_BATCH = 32
PLAN_NAME = "budget_plan.json"
# The names `plan_for_budget` may choose, as `TrainingConfig` fields (and "preset").
CHOOSABLE = ("preset", "batch_size", "warmup_steps")


@dataclass(frozen=True)
class BudgetPlan:
    """What was chosen (``preset``, ``batch_size``, ``warmup_steps``), the steps expected in the budget, and why."""

    preset: str
    batch_size: int
    warmup_steps: int
    steps: int
    reason: str


def plan_for_budget(
    seconds_per_example: dict[str, float],
    *,
    minutes: float,
    examples: int,
    given: dict[str, object],
    default_warmup: int = 200,
) -> BudgetPlan:
    """Choose preset, batch and warmup for ``minutes`` of training from each preset's measured seconds per example
    (one optimizer step on one example; presets in ascending size). ``given`` holds the settings the user fixed
    (any of `CHOOSABLE`), which are kept."""
    seconds = minutes * 60
    presets = [given["preset"]] if "preset" in given else list(seconds_per_example)
    batches = [given["batch_size"]] if "batch_size" in given else [b for b in BATCHES if b <= examples] or [examples]

    def steps_of(preset: str, batch: int) -> int:
        return int(seconds / (seconds_per_example[preset] * batch))

    chosen = None
    for preset in reversed(presets):  # largest first
        fitting = [batch for batch in batches if steps_of(preset, batch) >= MIN_STEPS]
        if fitting and (fitting[0] >= MIN_BATCH or "batch_size" in given or len(presets) == 1):
            chosen = (preset, fitting[0])
            break
    short = chosen is None
    if short:
        chosen = (presets[0], batches[-1])
    preset, batch = chosen
    steps = max(1, steps_of(preset, batch))
    if "warmup_steps" in given:
        warmup = int(given["warmup_steps"])
    else:
        warmup = min(default_warmup, int(WARMUP_FRACTION * steps))
    speed = 1 / (seconds_per_example[preset] * batch)
    why = (
        f"measured {speed:.2f} steps/s here, so about {steps} steps in {minutes:g} minutes; "
        f"{'the largest preset' if len(presets) > 1 else 'the preset'} and batch reaching {MIN_STEPS} steps, "
        f"warmup ≤ {WARMUP_FRACTION:.0%} of them"
    )
    if short:
        why += f" (the budget is short for {MIN_STEPS} steps even so: give more --minutes for a better model)"
    kept = [name.replace("_", "-") for name in CHOOSABLE if name in given]
    if kept:
        why += f"; kept your --{', --'.join(kept)}"
    return BudgetPlan(preset=preset, batch_size=batch, warmup_steps=warmup, steps=steps, reason=why)


def measure_seconds_per_example(
    task: TrainingTask, *, batch_size: int, device: torch.device, precision: str = "fp32", repeats: int = 2
) -> float:
    """Seconds for one AdamW step per example of ``task`` (forward, backward, update) at ``batch_size``: the fastest
    of ``repeats`` timed steps after one untimed step (allocations, first-call costs). The model is thrown away."""
    torch.manual_seed(0)
    model = task.build_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    examples = next(iter(task.tensors.values())).shape[0]
    indices = torch.arange(min(batch_size, examples))
    batch = {name: tensor[indices].to(device) for name, tensor in task.tensors.items()}
    best = math.inf
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        with autocast(precision, device):
            loss, _ = task.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if attempt > 0:
            best = min(best, time.perf_counter() - start)
    return best / len(indices)


def save_plan(out: Path, plan: BudgetPlan) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / PLAN_NAME).write_text(json.dumps(asdict(plan), indent=2) + "\n")


def load_plan(out: Path) -> BudgetPlan | None:
    """The plan a run in ``out`` was started with (a rerun resumes with it instead of measuring again)."""
    path = out / PLAN_NAME
    if not path.exists():
        return None
    return BudgetPlan(**json.loads(path.read_text()))
