"""A model directory on disk: the generator release (``DIR/generator/``) and the recommended sampling settings
(``DIR/sampling.json``), read and written for `argen.Pipeline` and the commands."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from argen.checkpoint import (
    CONFIG_NAME,
    GENERATOR_KIND,
    GeneratorConfig,
    atomic_write_text,
    config_from_dict,
    load_release_weights,
    read_release_config,
)
from argen.errors import ArgenError
from argen.model import Transformer, TransformerConfig
from argen.orders import Order, build_order
from argen.tokenizers.protocol import TokenizerProtocol

SAMPLING_NAME = "sampling.json"
# The library's own defaults, used where neither the caller nor the model's sampling.json gives a value.
SAMPLING_DEFAULTS = {"cfg_scale": 1.0, "cfg_schedule": "constant", "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def read_recommended_sampling(directory: str | Path) -> dict[str, float | str]:
    """DIR/sampling.json's ``recommended`` settings (empty when absent); unknown or mistyped keys are refused."""
    path = Path(directory) / SAMPLING_NAME
    if not path.is_file():
        return {}
    try:
        recommended = json.loads(path.read_text()).get("recommended", {})
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        raise ArgenError(f"{path} is not a JSON object with a 'recommended' object; fix or delete it") from None
    unknown = sorted(set(recommended) - set(SAMPLING_DEFAULTS))
    if unknown:
        known = ", ".join(SAMPLING_DEFAULTS)
        raise ArgenError(f"{path}: unknown sampling setting(s) {', '.join(unknown)}; known: {known}")
    for name, value in recommended.items():
        expected = str if name == "cfg_schedule" else (int, float)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ArgenError(f"{path}: {name} must be a {'string' if expected is str else 'number'}, got {value!r}")
    return recommended


def write_recommended_sampling(
    directory: str | Path, recommended: dict[str, float | str], *, chosen_by: str | None = None
) -> None:
    """Write DIR/sampling.json: ``recommended`` settings and, optionally, what chose them."""
    document = {"recommended": recommended, **({"chosen_by": chosen_by} if chosen_by else {})}
    atomic_write_text(Path(directory) / SAMPLING_NAME, json.dumps(document, indent=2) + "\n")


def load_generator(
    directory: str | Path, tokenizer: TokenizerProtocol, *, device: torch.device | str = "cpu"
) -> tuple[Transformer, Order, dict]:
    """A generator release → (Transformer in eval mode, order, config document); checked against ``tokenizer``."""
    document = read_release_config(directory, kind=GENERATOR_KIND)
    source = str(Path(directory) / CONFIG_NAME)
    config = config_from_dict(GeneratorConfig, document["config"], source=source)
    transformer_config = config_from_dict(TransformerConfig, config.transformer, source=source)
    order = build_order(config.order, tokenizer)
    order.check_model(transformer_config, tokenizer)
    model = Transformer(transformer_config)
    load_release_weights(directory, model)
    return model.to(device).eval(), order, document


__all__ = [
    "SAMPLING_DEFAULTS",
    "SAMPLING_NAME",
    "load_generator",
    "read_recommended_sampling",
    "write_recommended_sampling",
]
