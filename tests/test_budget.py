"""Settings chosen for a time budget (argen.train.budget): the decision on fake timings, and `argen train --minutes`
choosing what the user left out while keeping every flag given."""

import json
import re

import pytest
from conftest import write_idx_dataset

from argen.cli import run
from argen.train.budget import MIN_STEPS, PLAN_NAME, plan_for_budget

# Seconds per example for one optimizer step, ascending preset size (made-up, in the ratios of real presets).
FAST_MACHINE = {"tiny": 2e-5, "1m": 1e-4, "3m": 3e-4, "10m": 1e-3}
# One busy thread: issue 27 measured the 3m preset at 4.51 s per step of 128 images (3.5e-2 s per example).
SLOW_THREAD = {"tiny": 1e-3, "1m": 5e-3, "3m": 3.5e-2, "10m": 1e-1}


def test_a_fast_machine_gets_the_largest_preset_that_reaches_the_steps():
    plan = plan_for_budget(FAST_MACHINE, minutes=5, examples=1000, given={})
    # 10m at batch 32: 300 s / (1e-3 * 32) = 9375 steps ≥ 300 → 10m; batch 128 gives 2343 steps, still ≥ 300.
    assert (plan.preset, plan.batch_size) == ("10m", 128)
    assert plan.steps == int(300 / (1e-3 * 128)) and plan.warmup_steps == 200  # the recipe's cap, under 10 %


def test_a_slow_thread_gets_a_smaller_model_and_a_warmup_under_a_tenth_of_the_steps():
    plan = plan_for_budget(SLOW_THREAD, minutes=5, examples=1000, given={})
    assert plan.steps >= MIN_STEPS and plan.warmup_steps <= plan.steps // 10
    # 3m at batch 32 gets 300 / (3.5e-2 * 32) = 267 steps < 300; 1m at batch 128 gets 468.
    assert (plan.preset, plan.batch_size, plan.steps, plan.warmup_steps) == ("1m", 128, 468, 46)
    tighter = plan_for_budget(SLOW_THREAD, minutes=1, examples=1000, given={})
    assert (tighter.preset, tighter.batch_size, tighter.steps) == ("1m", 32, 375)
    assert "about" in tighter.reason and "steps/s" in tighter.reason


def test_a_budget_too_short_for_anything_says_so():
    plan = plan_for_budget(SLOW_THREAD, minutes=0.01, examples=1000, given={})
    assert plan.preset == "tiny" and plan.batch_size == 32 and "short" in plan.reason
    assert plan.warmup_steps == plan.steps // 10


def test_given_settings_are_kept():
    plan = plan_for_budget(SLOW_THREAD, minutes=5, examples=1000, given={"preset": "10m", "warmup_steps": 50})
    assert plan.preset == "10m" and plan.warmup_steps == 50 and "kept your --preset, --warmup-steps" in plan.reason
    plan = plan_for_budget(FAST_MACHINE, minutes=5, examples=1000, given={"batch_size": 16})
    assert plan.batch_size == 16 and plan.preset == "10m"


def test_small_data_caps_the_batch():
    plan = plan_for_budget(FAST_MACHINE, minutes=5, examples=40, given={})
    assert plan.batch_size == 32
    plan = plan_for_budget(FAST_MACHINE, minutes=5, examples=20, given={})
    assert plan.batch_size == 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    data = write_idx_dataset(root / "idx", train=64, test=16, size=16)
    run([
        "train-tokenizer", "--data", "mnist", "--data-dir", str(data), "--tokenizer", "vq", "--out", str(root / "tok"),
        "--steps", "4", "--batch-size", "16", "--width", "8", "--latent-dim", "8", "--codebook-size", "32",
        "--no-progress",
    ])  # fmt: skip
    return root / "tok", data


def train(tokenizer, out, *extra):
    directory, data = tokenizer
    run(["train", "--tokenizer", str(directory), "--order", "raster", "--data", "mnist", "--data-dir", str(data),
         "--out", str(out), "--no-progress", *extra])  # fmt: skip


def test_minutes_alone_chooses_and_says_why(tokenizer, tmp_path, capsys):
    out = tmp_path / "run"
    train(tokenizer, out, "--minutes", "0.02")
    printed = capsys.readouterr().out
    chosen = next(line for line in printed.splitlines() if line.strip().startswith("chosen"))
    assert "preset" in chosen and "batch size" in chosen and "warmup steps" in chosen and "steps/s" in chosen
    plan = json.loads((out / PLAN_NAME).read_text())
    state_config = json.loads((out / "generator" / "config.json").read_text())
    assert plan["warmup_steps"] == plan["steps"] // 10 and plan["batch_size"] in (64, 32)
    assert state_config["kind"] == "generator"
    # A rerun resumes with the same choice instead of measuring again (a new choice would refuse the resume).
    train(tokenizer, out, "--minutes", "0.04")
    assert "resuming" in capsys.readouterr().out


def test_explicit_flags_win(tokenizer, tmp_path, capsys):
    train(tokenizer, tmp_path / "some", "--minutes", "0.02", "--preset", "tiny", "--batch-size", "16")
    printed = capsys.readouterr().out
    assert "kept your --preset, --batch-size" in printed and re.search(r"batch +16 \(", printed)
    train(tokenizer, tmp_path / "all", "--minutes", "0.02", "--preset", "tiny", "--batch-size", "16",
          "--warmup-steps", "3")  # fmt: skip
    printed = capsys.readouterr().out
    assert "chosen" not in printed and "warmup 3 steps" in printed
    # Without --minutes the recipe applies: nothing is measured.
    train(tokenizer, tmp_path / "steps", "--steps", "2", "--batch-size", "16")
    printed = capsys.readouterr().out
    assert "chosen" not in printed and "3m preset" in printed and "warmup 200 steps" in printed
    assert not (tmp_path / "steps" / PLAN_NAME).exists()
