"""A model directory on disk, what `argen.Pipeline` loads and saves: ``DIR/tokenizer/`` and ``DIR/generator/`` (each
a release: ``config.json`` + ``model.safetensors``) and the recommended sampling settings (``DIR/sampling.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch

from argen.checkpoint import (
    CONFIG_NAME,
    GENERATOR_KIND,
    WEIGHTS_NAME,
    GeneratorConfig,
    atomic_write_text,
    config_from_dict,
    config_to_dict,
    load_release_weights,
    read_release_config,
    release_fingerprint,
    save_release,
)
from argen.errors import ArgenError
from argen.model import Transformer, TransformerConfig
from argen.orders import Order, build_order
from argen.release_checks import build_checked
from argen.samplers.logits import check_sampling
from argen.tokenizers import Tokenizer, load_tokenizer
from argen.tokenizers.protocol import TokenizerProtocol

SAMPLING_NAME = "sampling.json"
# The library's own defaults, used where neither the caller nor the model's sampling.json gives a value.
SAMPLING_DEFAULTS = {"cfg_scale": 1.0, "cfg_schedule": "constant", "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def read_recommended_sampling(directory: str | Path) -> dict[str, float | str]:
    """DIR/sampling.json's ``recommended`` settings (empty when absent); unknown or mistyped keys and unusable
    values (`argen.samplers.logits.check_sampling`: NaN guidance, temperature 1e-40, ...) are refused."""
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
    try:  # refused here, naming the file, rather than blamed later on every caller who leaves the value out
        check_sampling(**{**SAMPLING_DEFAULTS, **recommended})
    except ArgenError as error:
        raise ArgenError(f"{path}: {error}; fix or delete it") from None
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
    weights = Path(directory) / WEIGHTS_NAME
    model = build_checked(lambda: Transformer(transformer_config), weights=weights, config=transformer_config)
    load_release_weights(directory, model)
    return model.to(device).eval(), order, document


class ModelDirectory(NamedTuple):
    """What a model directory holds, loaded and checked."""

    tokenizer: Tokenizer
    model: Transformer
    order: Order
    classes: list[str] | None
    tokenizer_fingerprint: str
    recommended: dict[str, float | str]


def load_model_directory(directory: str | Path, *, device: torch.device | str = "cpu") -> ModelDirectory:
    """Load ``directory/tokenizer`` and ``directory/generator`` (in eval mode, on ``device``) and check that they
    belong together."""
    directory = Path(directory)
    if not (directory / "generator" / CONFIG_NAME).is_file():
        raise ArgenError(
            f"{directory} is not an argen model directory: it needs generator/ and tokenizer/ (made by `argen train`)"
        )
    tokenizer, _ = load_tokenizer(directory / "tokenizer")
    tokenizer = tokenizer.to(device).eval()
    model, order, document = load_generator(directory / "generator", tokenizer, device=device)
    extra = document.get("extra", {})
    expected = extra.get("tokenizer_fingerprint")
    fingerprint = release_fingerprint(directory / "tokenizer")
    if expected is not None and expected != fingerprint:
        raise ArgenError(
            f"{directory}/tokenizer is not the tokenizer this generator was trained on (fingerprints differ); "
            "copy the original tokenizer back"
        )
    recommended = read_recommended_sampling(directory)
    return ModelDirectory(tokenizer, model, order, extra.get("classes"), fingerprint, recommended)


def save_model_directory(
    directory: str | Path,
    *,
    tokenizer: Tokenizer,
    model: Transformer,
    order: Order,
    classes: list[str],
    recommended: dict[str, float | str],
    dtype: torch.dtype | None = None,
) -> None:
    """Write ``directory/tokenizer``, ``directory/generator`` and, when there are any, the recommended settings."""
    directory = Path(directory)
    save_release(
        directory / "tokenizer", kind="tokenizer", config=tokenizer.config, state_dict=tokenizer.state_dict(),
        dtype=dtype,
    )  # fmt: skip
    config = GeneratorConfig(order=order.name, transformer=config_to_dict(model.config))
    extra = {"classes": classes, "tokenizer_fingerprint": release_fingerprint(directory / "tokenizer")}
    save_release(
        directory / "generator", kind=GENERATOR_KIND, config=config, state_dict=model.state_dict(), dtype=dtype,
        extra=extra,
    )  # fmt: skip
    if recommended:
        write_recommended_sampling(directory, recommended)


def same_tokenizer(
    first: Tokenizer, first_fingerprint: str | None, second: Tokenizer, second_fingerprint: str | None
) -> bool:
    """Whether two tokenizers are one: by release fingerprint, else (tokenizers built in memory) by config and
    weights."""
    if first is second:
        return True
    if first_fingerprint is not None and second_fingerprint is not None:
        return first_fingerprint == second_fingerprint
    if first.config != second.config:
        return False
    mine, theirs = first.state_dict(), second.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[name], theirs[name].to(mine[name])) for name in mine)


__all__ = [
    "SAMPLING_DEFAULTS",
    "SAMPLING_NAME",
    "ModelDirectory",
    "load_generator",
    "load_model_directory",
    "read_recommended_sampling",
    "same_tokenizer",
    "save_model_directory",
    "write_recommended_sampling",
]
