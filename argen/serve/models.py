"""The models `argen serve` serves: found in model directories, loaded once, their metadata checked at start.

A model whose metadata cannot be served (class names that are not a list of names, a recommended sampling setting
that is not a finite number in range) is refused while the server starts, naming it, rather than breaking
``GET /api/models`` or blaming every later request for it.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

from argen.checkpoint import CONFIG_NAME, shipped_checkpoint
from argen.errors import ArgenError
from argen.pipeline import Pipeline
from argen.samplers.logits import CFG_SCHEDULES, MIN_TEMPERATURE

MAX_CFG_SCALE = 20.0
MAX_TEMPERATURE = 10.0


@dataclass
class ServedModel:
    """One pipeline behind the API: its name in requests, where it came from, and the lock its calls take."""

    name: str
    directory: Path
    pipeline: Pipeline
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def steps(self) -> int:
        return self.pipeline.order.layout(self.pipeline.tokenizer.grid_shapes).num_steps

    @property
    def classes(self) -> list[str]:
        count = self.pipeline.model.config.num_classes
        names = list(self.pipeline.classes)
        return names if len(names) == count else [str(index) for index in range(count)]

    def describe(self) -> dict:
        config = self.pipeline.tokenizer.config
        return {
            "name": self.name,
            "order": self.pipeline.order.name,
            "directory": str(self.directory),
            "classes": self.classes,
            "steps": self.steps,
            "image_size": config.image_size,
            "channels": config.channels,
            "grid_shapes": [list(shape) for shape in self.pipeline.tokenizer.grid_shapes],
            "codebook_size": self.pipeline.tokenizer.codebook_size,
            "parameters": sum(parameter.numel() for parameter in self.pipeline.model.parameters()),
            "sampling": self.pipeline.sampling_settings(),  # the model's recommended settings (sampling.json)
        }


def default_model_directories(data: str = "fashion-mnist") -> list[Path]:
    """The shipped model directories (``checkpoints/DATA/<order>/``), found the way `argen demo` finds them."""
    root = shipped_checkpoint(data)
    if root is None:
        raise ArgenError(
            f"no shipped checkpoints for {data} (looked for checkpoints/{data}/ here and beside the package): "
            "run from a clone of the repository or pass --models DIR ..."
        )
    return model_directories([root])


def is_model_directory(path: Path) -> bool:
    return (path / "generator" / CONFIG_NAME).is_file() and (path / "tokenizer" / CONFIG_NAME).is_file()


def model_directories(paths: list[str | Path]) -> list[Path]:
    """Each path as given when it is a model directory, else the model directories directly inside it."""
    found = []
    for path in map(Path, paths):
        if is_model_directory(path):
            found.append(path)
            continue
        inside = sorted(child for child in path.iterdir() if is_model_directory(child)) if path.is_dir() else []
        if not inside:
            raise ArgenError(
                f"{path} is not a model directory (generator/ + tokenizer/, made by `argen train`) and holds none"
            )
        found.extend(inside)
    return found


def load_models(paths: list[str | Path], *, device: str = "cpu") -> dict[str, ServedModel]:
    """Load each model directory once; a model is named after its directory (``frequency``, ``frequency-2``...)."""
    models: dict[str, ServedModel] = {}
    for directory in model_directories(paths):
        name, copy = directory.resolve().name, 2
        while name in models:
            name, copy = f"{directory.resolve().name}-{copy}", copy + 1
        model = ServedModel(name, directory, Pipeline.from_pretrained(directory, device=device))
        check_metadata(model)
        models[name] = model
    return models


def check_metadata(model: ServedModel) -> None:
    """One-line ArgenError naming ``model`` when its class names or recommended sampling settings cannot be served."""
    pipeline, where = model.pipeline, f"model {model.name} ({model.directory})"
    classes = pipeline.classes
    if not isinstance(classes, (list, tuple)) or not all(isinstance(name, str) for name in classes):
        given = json.dumps(classes, default=str)[:40]
        raise ArgenError(f"{where}: generator/{CONFIG_NAME} gives classes {given}, not a list of class names: fix it")
    settings = pipeline.sampling_settings()
    ranges = {
        "cfg_scale": (0.0, MAX_CFG_SCALE),
        "temperature": (0.0, MAX_TEMPERATURE),
        "top_k": (0, pipeline.tokenizer.codebook_size),
        "top_p": (0.0, 1.0),
    }
    for name, (low, high) in ranges.items():
        value = settings[name]
        usable = isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high
        if name == "temperature" and usable:
            usable = value == 0 or value >= MIN_TEMPERATURE
        if name == "top_p" and usable:
            usable = value > 0
        if not usable:
            raise ArgenError(f"{where}: sampling.json recommends {name} {value!r}, outside [{low}, {high}]: fix it")
    if settings["cfg_schedule"] not in CFG_SCHEDULES:
        raise ArgenError(f"{where}: sampling.json recommends an unknown cfg_schedule {settings['cfg_schedule']!r}")
