"""The shared training loop: exact resume, divergence stop, budgets, refusals, metrics."""

import errno
import json
import signal

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from argen.checkpoint import load_train_state
from argen.errors import ArgenError
from argen.train import TrainingConfig, TrainingDiverged, TrainingTask, fit, learning_rate_at


def make_task(poison_at: int | None = None) -> TrainingTask:
    from dataclasses import make_dataclass

    config_class = make_dataclass("TinyConfig", [("hidden", int, 16)])

    def build_model():
        # Dropout makes the loss depend on the torch RNG, so exact resume also proves the RNG state is restored.
        return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.GELU(), nn.Linear(16, 1))

    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(96, 4, generator=generator)
    targets = inputs.sum(-1, keepdim=True) + 0.1 * torch.randn(96, 1, generator=generator)
    calls = {"count": 0}

    def loss(module, batch):
        calls["count"] += 1
        value = nn.functional.mse_loss(module(batch["inputs"]), batch["targets"])
        if poison_at is not None and calls["count"] >= poison_at:
            value = value * float("nan")
        return value, {"calls": calls["count"]}

    return TrainingTask(
        kind="tiny",
        config=config_class(),
        build_model=build_model,
        tensors={"inputs": inputs, "targets": targets},
        loss=loss,
    )


def training(tmp_path, **overrides) -> TrainingConfig:
    values = dict(
        out=str(tmp_path),
        steps=20,
        batch_size=16,
        learning_rate=1e-2,
        warmup_steps=3,
        save_every=7,
        log_every=2,
        progress=False,
        ema_decay=0.9,
    )
    values.update(overrides)
    return TrainingConfig(**values)


def weights(directory):
    return load_file(str(directory / "model.safetensors"))


def test_resume_is_bit_identical(tmp_path):
    straight = fit(make_task(), training(tmp_path / "straight"))
    assert straight.reason == "finished" and straight.step == 20

    def interrupt(step):
        if step == 10:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does: checkpoint at the step boundary, then stop

    first = fit(make_task(), training(tmp_path / "resumed"), on_step=interrupt)
    assert first.reason == "interrupted" and first.step == 10
    assert load_train_state(tmp_path / "resumed" / "train_state.pt")["step"] == 10
    second = fit(make_task(), training(tmp_path / "resumed"))
    assert second.reason == "finished" and second.step == 20

    expected, actual = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name  # EMA weights, bit for bit
    raw_straight = load_train_state(tmp_path / "straight" / "train_state.pt")["model"]
    raw_resumed = load_train_state(tmp_path / "resumed" / "train_state.pt")["model"]
    for name in raw_straight:
        assert torch.equal(raw_straight[name], raw_resumed[name]), name
    # The metrics log holds every logged step exactly once, across the resume.
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 21, 2))


def test_training_lowers_the_loss(tmp_path):
    result = fit(make_task(), training(tmp_path, steps=60))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    assert result.step == 60


def test_nan_loss_stops_with_last_checkpoint_intact(tmp_path):
    with pytest.raises(TrainingDiverged, match="loss became nan at step 9.*the checkpoint of step 7 in .* is intact"):
        fit(make_task(poison_at=10), training(tmp_path))
    state = load_train_state(tmp_path / "train_state.pt")
    assert state["step"] == 7  # the periodic checkpoint before the NaN
    assert all(torch.isfinite(value).all() for value in weights(tmp_path).values())
    # Rerunning resumes from that checkpoint.
    result = fit(make_task(), training(tmp_path))
    assert result.step == 20


def test_nonfinite_gradient_stops(tmp_path):
    task = make_task()
    original = task.loss

    def inf_gradient(module, batch):
        value, logs = original(module, batch)
        return value + 0 * module[0].weight.sum() * float("inf") if logs["calls"] == 4 else value, logs

    task.loss = inf_gradient
    with pytest.raises(TrainingDiverged):
        fit(task, training(tmp_path))


def test_resume_refuses_other_settings_and_fresh_starts_over(tmp_path):
    fit(make_task(), training(tmp_path, steps=4))
    with pytest.raises(ArgenError, match="learning_rate: 0.01 in the run, 0.5 now"):
        fit(make_task(), training(tmp_path, steps=8, learning_rate=0.5))
    # A longer budget is allowed: it continues.
    assert fit(make_task(), training(tmp_path, steps=8)).step == 8
    assert fit(make_task(), training(tmp_path, steps=3, learning_rate=0.5, fresh=True)).step == 3


def test_budgets(tmp_path):
    with pytest.raises(ArgenError, match="no training budget"):
        fit(make_task(), training(tmp_path, steps=None))
    # 96 examples / batch 16 = 6 steps per epoch.
    assert fit(make_task(), training(tmp_path / "e", steps=None, epochs=2)).step == 12
    assert fit(make_task(), training(tmp_path / "both", steps=5, epochs=2)).step == 5
    result = fit(make_task(), training(tmp_path / "m", steps=None, minutes=1e-9))
    assert result.reason == "time budget" and result.step == 1
    # Rerunning a run whose time is used up takes no further step.
    again = fit(make_task(), training(tmp_path / "m", steps=None, minutes=1e-9))
    assert again.reason == "time budget" and again.step == 1
    with pytest.raises(ArgenError, match="larger than the 96 training examples"):
        fit(make_task(), training(tmp_path / "big", batch_size=128))


def test_learning_rate_schedule():
    config = TrainingConfig(out="unused", learning_rate=1.0, warmup_steps=10, final_learning_rate_ratio=0.1)
    assert learning_rate_at(0, training=config, horizon=110) == pytest.approx(0.1)
    assert learning_rate_at(9, training=config, horizon=110) == pytest.approx(1.0)
    assert learning_rate_at(60, training=config, horizon=110) == pytest.approx(0.55)
    assert learning_rate_at(110, training=config, horizon=110) == pytest.approx(0.1)
    assert learning_rate_at(50, training=config, horizon=None) == 1.0


def test_divergence_before_any_checkpoint_says_none_exists_and_the_way_on(tmp_path):
    with pytest.raises(TrainingDiverged) as raised:
        fit(make_task(poison_at=3), training(tmp_path))
    message = str(raised.value)
    assert "no checkpoint was written yet" in message and "intact" not in message
    assert "--fresh" in message and "new --out" in message and "rerun to resume" not in message
    assert "\n" not in message


def test_settings_changed_names_only_the_differing_nested_keys(tmp_path):
    from dataclasses import make_dataclass

    fit(make_task(), training(tmp_path, steps=4))
    task = make_task()
    nested = make_dataclass("Nested", [("transformer", dict), ("order", str)])
    task.config = nested(transformer={"width": 64, "depth": 2, "heads": 4}, order="raster")
    saved = nested(transformer={"width": 32, "depth": 2, "heads": 4}, order="raster")
    first = make_task()
    first.config = saved
    fit(first, training(tmp_path / "nested", steps=4))
    with pytest.raises(ArgenError) as raised:
        fit(task, training(tmp_path / "nested", steps=8, warmup_steps=5))
    message = str(raised.value)
    assert "transformer.width: 32 in the run, 64 now" in message
    assert "warmup_steps: 3 in the run, 5 now" in message
    assert "depth" not in message and "heads" not in message and "order" not in message


def test_temporary_files_of_a_killed_write_are_removed_on_the_next_run(tmp_path, capsys):
    fit(make_task(), training(tmp_path, steps=4))
    stale = [tmp_path / ".train_state.pt.abc123.tmp", tmp_path / ".model.safetensors.x1.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = tmp_path / "notes.tmp"  # not one of atomic_write's hidden temporaries: left alone
    keep.write_text("mine")
    fit(make_task(), training(tmp_path, steps=8))
    assert not any(path.exists() for path in stale) and keep.exists()
    assert ".train_state.pt.abc123.tmp" in capsys.readouterr().out


@pytest.mark.parametrize(
    "number, words", [(errno.ENOSPC, "disk holding .* is full"), (errno.EACCES, "no permission to write")]
)
def test_checkpoint_write_errors_are_named_in_one_line(tmp_path, monkeypatch, number, words):
    import argen.train.state

    def failing_write(path, state):
        raise OSError(number, "simulated")

    monkeypatch.setattr(argen.train.state, "save_train_state", failing_write)
    with pytest.raises(ArgenError, match=words) as raised:
        fit(make_task(), training(tmp_path, steps=8))
    assert "\n" not in str(raised.value)


def test_every_run_starts_with_a_summary(tmp_path, capsys):
    fit(make_task(), training(tmp_path, steps=12))
    out = capsys.readouterr().out
    block = out[out.index("train tiny") :].splitlines()[:8]
    for name in ("data", "model", "batch", "schedule", "budget", "output"):
        assert any(line.strip().startswith(name) for line in block), (name, block)
    assert "96 examples" in out and "12 steps = 2.00 epochs" in out and "learning rate 0.01, warmup 3 steps" in out


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"learning_rate": -1.0}, "--learning-rate must be a finite number above 0"),
        ({"learning_rate": float("nan")}, "--learning-rate"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"save_every": 0}, "--save-every must be at least 1"),
        ({"seed": 2**70}, "--seed must be at least 0 and at most"),
        ({"steps": 2.5}, "--steps takes a whole number"),
        ({"warmup_steps": -10}, "--warmup-steps must be at least 0"),
        ({"grad_clip": -1.0}, "--grad-clip"),
        ({"ema_decay": 1.0}, "--ema-decay must be below 1"),
    ],
)
def test_a_config_built_in_python_is_checked_like_the_flags(tmp_path, overrides, words):
    with pytest.raises(ArgenError, match=words):
        training(tmp_path, **overrides)
