"""Where a benchmark's numbers came from: the machine, its load, the commit, and the files they are written to. Shared
by the bench/ scripts that record it beside their tables (run as ``python bench/NAME.py``, which puts bench/ on the
import path): ``clock = start_clock()`` before measuring, ``machine_record(**clock, threads=...)`` after, then
``describe_machine`` / ``describe_run`` for the sentence above a table and ``write_results`` for OUT.md + OUT.json."""

from __future__ import annotations

import json
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


def start_clock() -> dict:
    """The start of a measurement: ``started`` (perf_counter) and the one-minute ``load_before``."""
    return {"started": time.perf_counter(), "load_before": os.getloadavg()[0]}


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


def describe_machine(machine: dict, threads: int) -> str:
    """'N CPU cores, T thread(s), torch X; load average A before, B after' for the line above a table."""
    return (
        f"{machine['cpu_count']} CPU cores, {threads} thread(s), torch {machine['torch']}; load average "
        f"{machine['load_before']:.2f} before, {machine['load_after']:.2f} after"
    )


def describe_run(machine: dict) -> str:
    """'DATE, commit C, S s.': when, from which tree and how long."""
    return f"{machine['date']}, commit {machine['commit']}, {machine['seconds']:.0f} s."


def write_results(out: str | Path, markdown: str, document: dict) -> Path:
    """OUT (the markdown table) and OUT with .json (everything measured), creating OUT's folder; returns OUT."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    out.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
    return out
