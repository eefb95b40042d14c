"""`argen features`: a browsable page per SAE latent (top images with firing cells, histogram, breakdowns, the best
predicate with its detection and fuzzing scores)."""

from __future__ import annotations

import argparse

NAME = "features"
HELP = "write a static feature browser for a sparse autoencoder (index.html + a page per latent)"
DESCRIPTION = (
    "Encode captured activations with the SAE, decode the captured sequences with the model's tokenizer and write one "
    "page per often-firing latent: top activating images with the firing cells tinted, an activation histogram, class "
    "and step breakdowns, and the best predicate over position facts with detection and fuzzing scores."
)
ORDER = 112


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sae", required=True, help="SAE directory (argen train-sae --out)")
    parser.add_argument("--model", help="model directory (default: the one the SAE was trained for)")
    parser.add_argument("--activations", help="captured activations (default: the ones the SAE was trained on)")
    parser.add_argument("--out", required=True, help="folder for index.html and the feature pages")
    parser.add_argument("--features", type=int, default=32, help="how many latents (the most often firing)")
    parser.add_argument("--max-sequences", type=int, default=1000, help="sequences of the capture to use")


def run(arguments: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    import torch

    from argen.data import float_to_images
    from argen.errors import ArgenError
    from argen.interpret.activations import Activations
    from argen.interpret.pages import write_feature_pages
    from argen.interpret.sae import load_sparse_autoencoder
    from argen.pipeline import Pipeline

    sae = load_sparse_autoencoder(arguments.sae)
    document = json.loads((Path(arguments.sae) / "config.json").read_text())
    model = arguments.model or sae.config.model
    captured = arguments.activations or document.get("extra", {}).get("activations")
    if not model or not captured:
        raise ArgenError("the SAE does not name its model or activations: pass --model DIR and --activations ACTS")
    activations = Activations(captured)
    pipeline = Pipeline.from_pretrained(model)
    count = min(arguments.max_sequences, activations.sequences)
    rows = activations.load(sae.config.hook, max_sequences=count)
    shape = activations.hooks[sae.config.hook]  # [H, Dh] for per-head attention outputs, [D] otherwise
    heads = shape[0] if len(shape) == 2 else None
    table = activations.positions(max_sequences=count)
    with torch.no_grad():
        ids = [grid[:count] for grid in activations.ids()]
        images = torch.cat([
            float_to_images(pipeline.tokenizer.decode([grid[start : start + 256] for grid in ids]))
            for start in range(0, count, 256)
        ])  # fmt: skip
    index = write_feature_pages(
        sae, rows, table, images, arguments.out, classes=pipeline.classes, features=arguments.features,
        title=f"{sae.config.hook} of {model}", heads=heads,
    )  # fmt: skip
    print(f"feature pages: {index}")
