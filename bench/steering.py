"""Steering a shipped generator with an SAE latent (docs/interpret.md): pick the latent whose best predicate is a class,
sample 200 images (20 per class) at a few DELTAs and count the classes the shipped classifier predicts; optionally
compare detection F1 of SAE latents with raw neurons of the same hook point (delphi's claim, on images).

    python bench/steering.py --sae SAE --activations ACTS [--deltas 0,4,8,16] [--neurons 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from argen.data import float_to_images
from argen.interpret.activations import Activations
from argen.interpret.interpretation import cell_statistics, interpret_latent, with_regions
from argen.interpret.pages import latent_activations
from argen.interpret.sae import load_sparse_autoencoder
from argen.interpret.steering import FeatureEdit, steering
from argen.metrics.evaluate import load_evaluation_classifier
from argen.pipeline import Pipeline


def explained_table(pipeline: Pipeline, activations: Activations, count: int) -> dict[str, torch.Tensor]:
    table = activations.positions(max_sequences=count)
    ids = [grid[:count] for grid in activations.ids()]
    with torch.no_grad():
        images = float_to_images(pipeline.tokenizer.decode(ids))
    return with_regions({**table, **cell_statistics(images, table)})


def f1_scores(values: torch.Tensor, table: dict[str, torch.Tensor], units: list[int]) -> dict[int, tuple]:
    """unit → (explanation, detection F1) for the columns ``units`` of ``values`` (P, M), positive part."""
    scores = {}
    for unit in units:
        interpretation = interpret_latent(values[:, unit].clamp_min(0), table, seed=unit)
        if interpretation is not None:
            scores[unit] = (interpretation.predicate.describe(), interpretation.detection.get("f1", float("nan")))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae", required=True)
    parser.add_argument("--activations", required=True)
    parser.add_argument("--model", default="checkpoints/fashion-mnist/raster")
    parser.add_argument("--classifier", default="checkpoints/fashion-mnist/classifier")
    parser.add_argument("--deltas", default="0,4,8,16")
    parser.add_argument("--candidates", type=int, default=48, help="most often firing latents to explain")
    parser.add_argument("--sequences", type=int, default=500)
    parser.add_argument("--neurons", type=int, default=0, help="also score this many raw neurons and latents")
    arguments = parser.parse_args()
    started = time.perf_counter()
    pipeline = Pipeline.from_pretrained(arguments.model)
    sae = load_sparse_autoencoder(arguments.sae)
    activations = Activations(arguments.activations)
    rows = activations.load(sae.config.hook, max_sequences=arguments.sequences)
    table = explained_table(pipeline, activations, arguments.sequences)
    codes = latent_activations(sae, rows)
    rate = (codes > 0).float().mean(0)
    # candidates: the latents (firing at ≥ 0.2 % of positions) whose activation mass sits most in one class
    mass = torch.zeros(10, codes.shape[1]).index_add_(0, table["label"], codes)  # (classes, M)
    concentration = (mass.max(0).values / mass.sum(0).clamp_min(1e-9)) * (rate >= 0.002)
    candidates = concentration.argsort(descending=True)[: arguments.candidates].tolist()
    explained = f1_scores(codes, table, candidates)
    by_class = {unit: entry for unit, entry in explained.items() if "label = " in entry[0]}
    if not by_class:
        raise SystemExit(f"no class latent among {len(explained)} explained: {list(explained.values())[:8]}")
    feature = max(by_class, key=lambda unit: by_class[unit][1])
    target = int(float(by_class[feature][0].split("label = ")[1].split()[0]))
    norm = float(rows.norm(dim=1).mean())
    print(f"latent {feature}: '{by_class[feature][0]}' F1 {by_class[feature][1]:.3f}; mean |activation| {norm:.2f}")
    classifier, _ = load_evaluation_classifier(arguments.classifier)
    labels = torch.arange(10).repeat_interleave(20)
    results = {"feature": feature, "explanation": by_class[feature][0], "f1": by_class[feature][1],
               "activation_norm": norm, "histograms": {}}  # fmt: skip
    for delta in [float(text) for text in arguments.deltas.split(",")]:
        with steering(pipeline, steer=[FeatureEdit(arguments.sae, feature, delta)]):
            output = pipeline.generate_batched(labels, num_images=200, batch_size=100, seed=0, progress=False)
        with torch.no_grad():
            predicted = classifier(output.pixels.float() / 127.5 - 1).argmax(1)
        histogram = torch.bincount(predicted, minlength=10).tolist()
        agree = float((predicted == labels).float().mean())
        results["histograms"][delta] = {"histogram": histogram, "agree_with_label": agree}
        print(f"delta {delta:g}: predicted {histogram}  class {target}: {histogram[target]}  agree {agree:.3f}")
    if arguments.neurons:
        generator = torch.Generator().manual_seed(0)
        neurons = torch.randperm(rows.shape[1], generator=generator)[: arguments.neurons].tolist()
        alive = (rate > 0).nonzero().squeeze(1)
        latents = alive[torch.randperm(alive.numel(), generator=generator)[: arguments.neurons]].tolist()
        for name, values, units in (("sae latents", codes, latents), ("neurons", rows, neurons)):
            f1 = [score for _, score in f1_scores(values, table, units).values()]
            quartiles = statistics.quantiles(f1, n=4)
            results[name] = {"count": len(f1), "median_f1": statistics.median(f1), "quartiles": quartiles}
            print(f"{name}: {len(f1)} scored, detection F1 median {statistics.median(f1):.3f}, quartiles "
                  f"{quartiles[0]:.3f} / {quartiles[2]:.3f}")  # fmt: skip
    print(json.dumps(results))
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
