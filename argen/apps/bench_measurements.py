"""`argen bench`'s measurements: every number of the benchmark, each cached in a JSON file beside what it measures,
so that a rerun redoes only what is missing or was made with other settings."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from argen.apps.bench_report import REFERENCE_SPLIT
from argen.checkpoint import atomic_write_text

if TYPE_CHECKING:
    from argen.apps.bench import BenchmarkConfig

EVAL_NAME = "eval.json"


def say(message: str) -> None:
    tqdm.write(f"bench: {message}")


def cached(path: Path, section: str, settings: dict, compute: Callable[[], dict], *, force: bool = False) -> dict:
    """``compute()``, or the result stored under ``section`` of the JSON file ``path`` when made with ``settings``.

    ``settings`` must be plain JSON (no tuples) so that what is read back compares equal to what is asked.
    """
    document = json.loads(path.read_text()) if path.is_file() else {}
    entry = document.get(section)
    if not force and isinstance(entry, dict) and entry.get("settings") == settings:
        return entry["results"]
    results = compute()
    document = json.loads(path.read_text()) if path.is_file() else {}  # reread: another section may be newer
    document[section] = {"settings": settings, "results": results}
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")
    return results


def count_parameters(release: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(release / "model.safetensors"), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())


def training_summary(model_directory: Path) -> dict | None:
    """Steps (from the release), minutes and final loss (the last logged interval of metrics.jsonl) of a model
    directory; fields that were not recorded are None, and None in all when nothing was (a bare release)."""
    from argen.train import METRICS_NAME

    document = json.loads((model_directory / "generator" / "config.json").read_text())
    steps = document.get("extra", {}).get("step")
    minutes = final_loss = None
    metrics = model_directory / METRICS_NAME
    if metrics.is_file():
        lines = [line for line in metrics.read_text().splitlines() if line.strip()]
        if lines:
            last = json.loads(lines[-1])
            minutes, final_loss = last.get("elapsed_seconds", 0.0) / 60, last.get("loss")
            steps = steps if steps is not None else last.get("step")
    if steps is None and minutes is None:
        return None
    return {"steps": steps, "minutes": minutes, "final_loss": final_loss}


class Measurements:
    """Every number of the benchmark, each cached in a JSON file beside what it measures (see `cached`)."""

    def __init__(self, config: BenchmarkConfig, classifier_directory: Path) -> None:
        from argen.checkpoint import release_fingerprint
        from argen.metrics.evaluate import load_evaluation_classifier

        self.config, self.classifier_directory = config, classifier_directory
        self.device = config.evaluation_device
        self.classifier, self.classifier_accuracy = load_evaluation_classifier(classifier_directory, device=self.device)
        self.shared = {
            "data": config.data,
            "classifier": release_fingerprint(classifier_directory),
            "reference_split": REFERENCE_SPLIT,
            "num_images": config.num_images,
        }
        self._reference: dict = {}
        self._tokenizers: dict[str, dict] = {}  # tokenizer fingerprint → its measurements (shared by orders)

    def reference(self) -> dict:
        """Features of the real reference split, computed on first use."""
        from argen.metrics.evaluate import reference_features

        if not self._reference:
            say(f"features of the real {REFERENCE_SPLIT} split")
            self._reference.update(
                reference_features(
                    self.classifier,
                    self.config.data,
                    split=REFERENCE_SPLIT,
                    data_dir=self.config.data_dir,
                    progress=self.config.progress,
                )  # fmt: skip
            )
        return self._reference

    def evaluate(self, **source) -> dict:
        """`argen eval` of ``source`` (model=... with its sampling settings, or real=...) against the reference."""
        from argen.metrics.evaluate import evaluate_generator

        config = self.config
        return evaluate_generator(
            classifier=self.classifier_directory, data=config.data, num_images=config.num_images,
            reference_split=REFERENCE_SPLIT, data_dir=config.data_dir, device=self.device, reference=self.reference(),
            progress=config.progress, **source,
        )  # fmt: skip

    def real(self) -> dict:
        """The real test images scored like a generator's: the floor row."""
        return cached(self.config.out / "eval-real.json", "real", self.shared, lambda: self.evaluate(real="test"))

    def order(self, order: str, index: int) -> dict:
        """One order's row: generator metrics and speed, its pictures, its tokenizer, its training and size."""
        from argen.checkpoint import release_fingerprint

        config, model_directory = self.config, self.config.out / order
        generator = release_fingerprint(model_directory / "generator")
        settings = dict(
            self.shared, generator=generator, cfg_scale=config.cfg_scale, seed=config.seed,
            batch_size=config.evaluation_batch_size, device=self.device,  # speed is measured too
        )  # fmt: skip

        def measure() -> dict:
            say(f"evaluating {order} ({index}/{len(config.orders)}) on {config.num_images} images")
            return self.evaluate(
                model=model_directory, batch_size=config.evaluation_batch_size, seed=config.seed,
                cfg_scale=config.cfg_scale,
            )  # fmt: skip

        measured = cached(model_directory / EVAL_NAME, "generator", settings, measure)
        tokenizer_kind = json.loads((model_directory / "tokenizer" / "config.json").read_text())["config"]["kind"]
        return {
            **measured,
            "tokenizer_kind": tokenizer_kind,
            "training": training_summary(model_directory),
            "parameters": count_parameters(model_directory / "generator"),
            "tokenizer": self.tokenizer(model_directory),
            **self.pictures(order, generator),
        }

    def pictures(self, order: str, generator: str) -> dict:
        """The sample grid (a row per class) and the step-by-step GIF of an order, redrawn when missing or stale."""
        from argen.apps.sampling_files import sample_to_files

        config, model_directory = self.config, self.config.out / order
        grid_path, gif_path = config.out / f"samples-{order}.png", config.out / f"progress-{order}.gif"

        def draw() -> dict:
            say(f"sample grid and progress GIF of {order}")
            sample_to_files(
                model_directory, per_label=config.per_class, grid_path=grid_path, progress_path=gif_path,
                seed=config.seed, cfg_scale=config.cfg_scale, device=self.device, verbose=False,
            )  # fmt: skip
            return {"grid": grid_path.name, "progress": gif_path.name}

        settings = {"generator": generator, "per_class": config.per_class, "cfg_scale": config.cfg_scale,
                    "seed": config.seed}  # fmt: skip
        force = not (grid_path.is_file() and gif_path.is_file())
        pictures = cached(model_directory / EVAL_NAME, "samples", settings, draw, force=force)
        return {"samples": pictures["grid"], "progress": pictures["progress"]}

    def tokenizer(self, model_directory: Path) -> dict:
        """Reconstruction quality of the model's tokenizer, measured once per tokenizer."""
        from argen.checkpoint import release_fingerprint
        from argen.metrics.evaluate import evaluate_tokenizer

        config = self.config
        fingerprint = release_fingerprint(model_directory / "tokenizer")
        if fingerprint not in self._tokenizers:
            self._tokenizers[fingerprint] = cached(
                model_directory / EVAL_NAME,
                "tokenizer",
                {"data": config.data, "tokenizer": fingerprint, "limit": config.num_images},
                lambda: evaluate_tokenizer(
                    model_directory / "tokenizer",
                    config.data,
                    split="test",
                    data_dir=config.data_dir,
                    limit=config.num_images,
                    progress=config.progress,
                ),  # fmt: skip
            )
        measured = self._tokenizers[fingerprint]
        return {key: measured.get(key) for key in ("psnr", "ssim", "codebook_usage", "perplexity", "tokens_per_image")}
