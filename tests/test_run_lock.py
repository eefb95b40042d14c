"""A run directory has one owner: a second trainer is refused, and a SIGKILLed one leaves nothing that blocks or
changes a rerun (the weights after kills and reruns are bit-identical to a straight run)."""

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from argen.checkpoint import LOCK_NAME, load_train_state, run_directory_lock
from argen.cli import main

REPOSITORY = Path(__file__).resolve().parent.parent
STEPS = 24

# A real trainer (train-classifier) in its own process: it prints each finished step and pauses a moment, so that
# the test can kill it at the step it chose; with --hold it stops at step 1 and waits to be killed.
TRAINER = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    from argen.train import train_classifier
    from argen.train import TrainingConfig

    data, out, steps, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), len(sys.argv) > 4

    def on_step(step):
        print(step, flush=True)
        time.sleep(600 if hold else 0.02)

    training = TrainingConfig(out=out, steps=steps, batch_size=16, learning_rate=3e-3, save_every=4, log_every=4,
                              progress=False, seed=0)
    train_classifier("mnist", training=training, data_dir=data, width=4, shift=1, on_step=on_step)
    """
)


def start(script: Path, data: Path, out: Path, *extra: str) -> subprocess.Popen:
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, str(script), str(data), str(out), str(STEPS), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
    )  # fmt: skip


def run_until(process: subprocess.Popen, step: int | None) -> int:
    """Read the trainer's steps; SIGKILL it once it reports ``step`` (None: let it finish). The last step seen."""
    seen, said = 0, []
    for line in process.stdout:
        if not line.strip().isdigit():  # the trainer's own messages
            said.append(line)
            continue
        seen = int(line)
        if step is not None and seen >= step:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=120)
    if step is None:
        assert process.returncode == 0, "".join(said)
    else:
        assert process.returncode == -signal.SIGKILL
    return seen


@pytest.fixture
def trainer(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    return script


def test_a_second_trainer_on_the_same_out_is_refused_naming_the_first(trainer, idx_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    holder = start(trainer, idx_dataset, out, "--hold")
    try:
        line = holder.stdout.readline()
        while line and not line.strip().isdigit():  # the trainer's own messages
            line = holder.stdout.readline()
        assert line.strip() == "1"  # it holds the lock and sits inside its first step
        argv = ["train-classifier", "--data", "mnist", "--data-dir", str(idx_dataset), "--out", str(out),
                "--steps", "2", "--batch-size", "16", "--width", "4", "--no-progress"]  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("argen: error: ")
        assert "in use by another trainer" in lines[0] and f"process {holder.pid}" in lines[0]
    finally:
        holder.kill()
        holder.wait(timeout=60)
    # The holder died without releasing anything by hand: the kernel dropped its lock, and a rerun goes ahead.
    assert (out / LOCK_NAME).read_text().strip() == str(holder.pid)
    main([*argv[:-1], "--no-progress"])
    assert load_train_state(out / "train_state.pt")["step"] == 2
    assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    with run_directory_lock(tmp_path), run_directory_lock(tmp_path):  # train_generator locks, then fit again
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
        probe = (
            "import sys; from argen.checkpoint import run_directory_lock\n"
            "try:\n    run_directory_lock(sys.argv[1]).__enter__()\nexcept Exception as error:\n    print(error)\n"
        )
        environment = dict(os.environ, PYTHONPATH=str(REPOSITORY))
        refused = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                                 env=environment, timeout=120)  # fmt: skip
        assert f"in use by another trainer (process {os.getpid()})" in refused.stdout, refused.stderr
    refused = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                             env=environment, timeout=120)  # fmt: skip
    assert refused.stdout == "" and refused.returncode == 0, refused  # released at the end of the outer block


def test_sigkill_at_random_steps_then_rerun_gives_the_straight_run_bit_for_bit(trainer, idx_dataset, tmp_path):
    assert run_until(start(trainer, idx_dataset, tmp_path / "straight"), None) == STEPS
    kills = sorted(random.Random(0).sample(range(2, STEPS - 1), 3))
    out = tmp_path / "killed"
    for kill_at in kills:
        assert run_until(start(trainer, idx_dataset, out), kill_at) >= kill_at
    run_until(start(trainer, idx_dataset, out), None)
    straight, killed = (
        load_file(str(tmp_path / "straight" / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert straight.keys() == killed.keys()
    for name in straight:
        assert torch.equal(straight[name], killed[name]), name
    states = [load_train_state(directory / "train_state.pt") for directory in (tmp_path / "straight", out)]
    assert states[0]["step"] == states[1]["step"] == STEPS
    for name, tensor in states[0]["model"].items():
        assert torch.equal(tensor, states[1]["model"][name]), name
