"""Sampling settings chosen for one model by measurement: what `argen tune` and bench/convergence.py's sweep run.

Guidance, its schedule, top-k/top-p and temperature change quality more than many training choices, and the best
values differ per model. `tune_sampling` scores each candidate by FID of samples against *held-out* real images
(the test split by default, so the choice is not fitted to the reference of the final evaluation) and keeps, among
the candidates whose class accuracy reaches the bar, the one with the lowest FID (samples should show the class
asked for; a lower FID bought with off-class samples is refused). The bar defaults to 90 % of the class accuracy
the classifier reaches on real held-out images, so a weaker classifier on one's own data does not rule out every
candidate. The choice and the measurements are written to ``MODEL/sampling.json``
(`argen.pipeline.write_recommended_sampling`), which `Pipeline` and every command then use by default.

The default search is in two stages, eight evaluations: guidance 1, 1.5, 2, 3 (constant), then at the best of those
VAR's linear guidance ramp, top-k 100, top-p 0.9 and temperature 0.9, one change at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from argen.errors import ArgenError
from argen.model_directory import SAMPLING_DEFAULTS, write_recommended_sampling
from argen.pipeline import Pipeline

GUIDANCE_SCALES = (1.0, 1.5, 2.0, 3.0)
# One change at a time from the best guidance: VAR's ramp, a truncated vocabulary, a sharper distribution.
REFINEMENTS = ({"cfg_schedule": "linear"}, {"top_k": 100}, {"top_p": 0.9}, {"temperature": 0.9})
CLASS_ACCURACY_SHARE = 0.9

# evaluate(settings) → results with "fid" and, for class-conditional models, "class_accuracy".
Evaluate = Callable[[dict], dict]


def describe(settings: dict) -> str:
    """'cfg 2, linear, top-k 100' for a settings dict (only what differs from the library defaults)."""
    parts = [f"cfg {settings.get('cfg_scale', SAMPLING_DEFAULTS['cfg_scale']):g}"]
    if settings.get("cfg_schedule", "constant") != "constant":
        parts.append(settings["cfg_schedule"])
    for name, label in (("top_k", "top-k"), ("top_p", "top-p"), ("temperature", "temperature")):
        if name in settings and settings[name] != SAMPLING_DEFAULTS[name]:
            parts.append(f"{label} {settings[name]:g}")
    return ", ".join(parts)


def choose(scores: list[dict], *, min_class_accuracy: float | None) -> dict:
    """The lowest-FID score among those with class accuracy ≥ ``min_class_accuracy`` (all of them when none is, or
    when the model is unconditional)."""
    eligible = scores
    if min_class_accuracy is not None and all("class_accuracy" in score for score in scores):
        eligible = [score for score in scores if score["class_accuracy"] >= min_class_accuracy] or scores
    return min(eligible, key=lambda score: score["fid"])


def sweep(evaluate: Evaluate, *, grid: list[dict] | None, conditional: bool, min_class_accuracy: float | None):
    """Score ``grid`` (or the two-stage default search); returns (scores, best). A score is settings + fid (+ class
    accuracy)."""
    scores: list[dict] = []

    def score(settings: dict) -> dict:
        results = evaluate(settings)
        entry = {**settings, "fid": results["fid"]}
        if "class_accuracy" in results:
            entry["class_accuracy"] = results["class_accuracy"]
        scores.append(entry)
        return entry

    if grid is not None:
        for settings in grid:
            score(settings)
        return scores, choose(scores, min_class_accuracy=min_class_accuracy)
    for scale in GUIDANCE_SCALES if conditional else (1.0,):  # guidance needs classes
        score({"cfg_scale": scale})
    best = choose(scores, min_class_accuracy=min_class_accuracy)
    base = {"cfg_scale": best["cfg_scale"]}
    for change in REFINEMENTS if conditional else REFINEMENTS[1:]:
        score({**base, **change})
    return scores, choose(scores, min_class_accuracy=min_class_accuracy)


def tune_sampling(
    model: str | Path, *, classifier: str | Path, data: str, num_images: int = 2000, reference_split: str = "test",
    data_dir: str | None = None, grid: list[dict] | None = None, min_class_accuracy: float | None = None,
    seed: int = 0, batch_size: int = 100, device: str = "cpu", evaluate: Evaluate | None = None, write: bool = True,
    progress: bool = True,
) -> dict:  # fmt: skip
    """Measure sampling settings for the model directory ``model`` and write the best to ``MODEL/sampling.json``.

    ``grid`` (a list of settings dicts) replaces the default two-stage search; ``min_class_accuracy`` None is
    `CLASS_ACCURACY_SHARE` of what real held-out images reach. ``evaluate`` replaces `argen eval`'s scoring (bench/
    convergence.py passes its cached one). Returns {"scores", "recommended", "chosen_by"}.
    """
    from argen.metrics.evaluate import evaluate_generator, load_evaluation_classifier, reference_features
    from argen.metrics.trust import real_floor

    if num_images < 2:
        raise ArgenError(f"--num must be at least 2 to compute FID, got {num_images}")
    conditional = Pipeline.from_pretrained(model).model.config.num_classes > 0
    if min_class_accuracy is None and conditional:
        floor = real_floor(classifier, data, reference_split=reference_split, num_images=num_images,
                           data_dir=data_dir, device=device, progress=progress)  # fmt: skip
        min_class_accuracy = CLASS_ACCURACY_SHARE * floor["class_accuracy"]
    if evaluate is None:
        classifier_model, _ = load_evaluation_classifier(classifier, device=device)
        reference = reference_features(
            classifier_model, data, split=reference_split, data_dir=data_dir, progress=progress
        )

        def evaluate(settings: dict) -> dict:
            if progress:
                print(f"tune: {describe(settings)}", flush=True)
            return evaluate_generator(
                classifier=classifier, data=data, model=model, num_images=num_images, reference_split=reference_split,
                data_dir=data_dir, batch_size=batch_size, seed=seed, device=device, reference=reference,
                progress=progress, **settings,
            )  # fmt: skip

    scores, best = sweep(evaluate, grid=grid, conditional=conditional, min_class_accuracy=min_class_accuracy)
    recommended = {name: value for name, value in best.items() if name in SAMPLING_DEFAULTS}
    bar = f"class accuracy ≥ {min_class_accuracy:.3f}, " if min_class_accuracy is not None and conditional else ""
    measured = "; ".join(
        f"{describe(score)}: FID {score['fid']:.4g}"
        + (f", class accuracy {score['class_accuracy']:.3f}" if "class_accuracy" in score else "")
        for score in scores
    )
    chosen_by = (
        f"lowest FID of {num_images} samples (seed {seed}) against the {reference_split} split of {data} among the "
        f"settings with {bar or 'any class accuracy, '}measured by argen tune: {measured}"
    )
    if write:
        write_recommended_sampling(model, recommended, chosen_by=chosen_by)
    return {"scores": scores, "recommended": recommended, "chosen_by": chosen_by}
