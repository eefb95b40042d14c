"""A 2-process gloo DDP run matches the 1-process run with the same global batch."""

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from argen.metrics.classifier import Classifier, ClassifierConfig


def run_classifier(data_dir, out, *, processes):
    common = [
        "train-classifier",
        "--data",
        "mnist",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--steps",
        "6",
        "--batch-size",
        "16",
        "--width",
        "4",
        "--shift",
        "0",
        "--dropout",
        "0",
        "--no-progress",
        "--warmup-steps",
        "2",
    ]
    if processes == 1:
        command = [sys.executable, "-m", "argen", *common]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "argen",
            *common,
        ]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return load_file(str(out / "model.safetensors"))


def test_two_process_gloo_matches_one_process(idx_dataset, tmp_path):
    single = run_classifier(idx_dataset, tmp_path / "one", processes=1)
    double = run_classifier(idx_dataset, tmp_path / "two", processes=2)
    assert single.keys() == double.keys()
    torch.manual_seed(0)  # the initial weights of --seed 0: training must have moved away from them
    initial = Classifier(ClassifierConfig(channels=1, image_size=12, num_classes=10, width=4, shift=0, dropout=0.0))
    assert not torch.allclose(initial.head.weight, single["head.weight"])
    for name in single:
        torch.testing.assert_close(double[name], single[name], rtol=1e-4, atol=1e-5, msg=name)
    # Only rank 0 wrote: one metrics file, one set of checkpoint files, one run-directory lock.
    assert sorted(path.name for path in (tmp_path / "two").iterdir()) == [
        ".lock",
        "config.json",
        "metrics.jsonl",
        "model.safetensors",
        "train_state.pt",
    ]
