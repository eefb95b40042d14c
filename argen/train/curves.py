"""`plot_runs`: the curves of one or more runs' ``metrics.jsonl`` in one figure (what `argen plot` draws).

Four panels against the optimizer step: training loss with the validation loss of the checkpoints (dashed),
learning rate, and throughput (examples per second). Runs are overlaid in matplotlib's colour cycle, named by their
directory. matplotlib comes with the ``eval`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path

from argen.errors import ArgenError, install_hint
from argen.train.task import METRICS_NAME

PANELS = (("loss", "loss (dashed: validation)"), ("learning_rate", "learning rate"),
          ("examples_per_second", "examples per second"))  # fmt: skip


def read_metrics(run: str | Path) -> list[dict]:
    """The records of ``RUN/metrics.jsonl`` (or of the file itself), one dict per line."""
    path = Path(run)
    path = path / METRICS_NAME if path.is_dir() else path
    if not path.is_file():
        raise ArgenError(f"{run} has no {METRICS_NAME}: give a run directory (an argen train* --out)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_runs(runs: list[str | Path], out: str | Path) -> Path:
    """Draw the runs' curves into the image ``out`` (PNG, SVG, PDF: by its suffix); returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ArgenError(f"argen plot needs matplotlib: {install_hint('eval')}") from None
    figure, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.6), constrained_layout=True)
    for index, run in enumerate(runs):
        records = read_metrics(run)
        colour = f"C{index % 10}"
        name = Path(run).name or str(run)
        for axis, (key, title) in zip(axes, PANELS):
            points = [(record["step"], record[key]) for record in records if key in record]
            if points:
                axis.plot(*zip(*points), color=colour, label=name)
            axis.set_title(title)
            axis.set_xlabel("step")
        validation = [(record["step"], record["validation_loss"]) for record in records if "validation_loss" in record]
        if validation:
            axes[0].plot(*zip(*validation), color=colour, linestyle="--", marker="o", markersize=3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize="small")
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return Path(out)
