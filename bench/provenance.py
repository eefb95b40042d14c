"""Where a benchmark's numbers came from: the machine, its load, the commit. Shared by the bench/ scripts that
record it beside their tables (run as ``python bench/NAME.py``, which puts bench/ on the import path)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return commit.stdout.strip() + (" (uncommitted changes in the tree)" if dirty.stdout.strip() else "")


def machine_record(*, started: float, load_before: float, threads: int | None = None) -> dict:
    """CPU count, versions, load before/after, date, commit and the seconds since ``started`` (perf_counter)."""
    record = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}
    if threads is not None:
        record["threads"] = threads
    record.update(
        load_before=load_before,
        load_after=os.getloadavg()[0],
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        commit=git_commit(),
        seconds=time.perf_counter() - started,
    )
    return record
