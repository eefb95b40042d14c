"""How far `argen eval`'s numbers can be trusted: the floor real images reach, and one warning line when they mislead.

FID, KID and precision/recall are computed in the feature space of argen's small classifier. On a data set of
one's own that classifier is often weak (a two-minute training, two classes), and then generated colour blobs can
score *better* than real held-out images (issue 27: FID 0.12 for blobs, 0.26 for the real test split). So every
score is printed beside its floor: the same metric for as many real held-out images (the split that is not the
reference) against the same reference. A generator is judged by its distance to that floor, not by the number
alone. The floor is cached per classifier weights, data, reference split and image count.

`trust_warning` names, in one line, what makes the numbers doubtful (docs/evaluation.md explains each rule):

- a weak classifier: its held-out accuracy, rescaled so that chance (1/K for K classes) is 0 and perfect is 1
  (``(accuracy - 1/K) / (1 - 1/K)``), below ``MIN_SCALED_ACCURACY`` (0.8), or not recorded; fewer than
  ``MIN_CLASSES`` (5) classes, since features trained to separate two or three classes see little else;
- sets too small for the metric: fewer than ``SAMPLES_PER_DIMENSION`` (10) images per feature dimension on either
  side (FID estimates a D×D covariance; below ~10·D images its bias dominates differences between models);
- generated images that beat real held-out images on FID: the features cannot tell them apart.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from argen.checkpoint import atomic_write_text
from argen.data import cache_directory

MIN_SCALED_ACCURACY = 0.8
MIN_CLASSES = 5
SAMPLES_PER_DIMENSION = 10
# The scores given a floor (the spectral ones compare pixels, not features, and have their own reading).
FLOOR_METRICS = (
    "fid", "kid", "inception_score", "precision", "recall", "density", "coverage", "class_accuracy",
    "frequency_keep_score", "spectrum_log_distance",
)  # fmt: skip


def held_out_split(reference_split: str) -> str:
    """The real split that is not the reference: what the floor scores."""
    return "test" if reference_split == "train" else "train"


def real_floor(
    classifier: str | Path, data: str, *, reference_split: str = "train", num_images: int, data_dir: str | None = None,
    device: str = "cpu", progress: bool = True,
) -> dict[str, float]:  # fmt: skip
    """`FLOOR_METRICS` of ``num_images`` real held-out images (fewer if the split is smaller) against the reference
    split, as `argen eval` scores generated ones; plus ``images``, the count scored. Cached on disk."""
    from argen.metrics.evaluate import (
        classifier_split,
        load_evaluation_classifier,
        reference_features,
        score_images,
    )

    classifier_model, _ = load_evaluation_classifier(classifier, device=device)
    held_out = classifier_split(
        classifier_model, data, split=held_out_split(reference_split), data_dir=data_dir, progress=progress
    )
    images, labels = held_out.images[:num_images], held_out.labels
    labels = labels[:num_images] if labels is not None else None
    digest = hashlib.sha256(f"{data}|{reference_split}|{images.shape[0]}".encode())
    digest.update((Path(classifier) / "model.safetensors").read_bytes())
    digest.update(images.numpy().tobytes())
    path = cache_directory("floors") / f"{digest.hexdigest()[:24]}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:  # a damaged cache file is recomputed
            pass
    reference = reference_features(classifier_model, data, split=reference_split, data_dir=data_dir, progress=progress)
    scores = score_images(images, labels, classifier=classifier_model, reference=reference, progress=progress)
    floor = {name: scores[name] for name in FLOOR_METRICS if name in scores}
    floor["images"] = int(images.shape[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(floor, indent=2) + "\n")
    return floor


def scaled_accuracy(accuracy: float, num_classes: int) -> float:
    """Accuracy rescaled so that chance (1/K) is 0 and perfect is 1."""
    chance = 1 / num_classes
    return (accuracy - chance) / (1 - chance)


def trust_warning(
    *, classifier_accuracy: float | None, num_classes: int, feature_dim: int, generated: int, reference: int,
    fid: float | None = None, floor_fid: float | None = None,
) -> str | None:  # fmt: skip
    """One line saying why the scores may mislead, or None when nothing does. See the module docstring's rules."""
    reasons = []
    if classifier_accuracy is None:
        reasons.append("the classifier's held-out accuracy is not recorded (retrain it with argen train-classifier)")
    elif num_classes > 1 and scaled_accuracy(classifier_accuracy, num_classes) < MIN_SCALED_ACCURACY:
        reasons.append(
            f"the classifier is weak: held-out accuracy {classifier_accuracy:.3f} where chance is "
            f"{1 / num_classes:.3f} (train it longer or on more data)"
        )
    if num_classes < MIN_CLASSES:
        reasons.append(f"features of a {num_classes}-class classifier see little beyond those classes")
    smallest = min(generated, reference)
    if smallest < SAMPLES_PER_DIMENSION * feature_dim:
        reasons.append(
            f"{smallest} images are few for {feature_dim}-dimensional features (FID wants ≥ "
            f"{SAMPLES_PER_DIMENSION * feature_dim})"
        )
    if fid is not None and floor_fid is not None and fid < floor_fid:
        reasons.append(f"FID {fid:.4g} beats real held-out images ({floor_fid:.4g}): the features cannot tell")
    if not reasons:
        return None
    return "warning: these scores may mislead: " + "; ".join(reasons)


def floor_table(results: dict, floor: dict[str, float]) -> list[str]:
    """Rows "name  value  (real held-out: floor)" for the scalar results, the floor beside every score that has one."""
    flat = []
    for name, value in results.items():
        if isinstance(value, dict):  # nested dicts as parent.child, as `argen eval` always printed them
            flat += [(f"{name}.{key}", inner) for key, inner in value.items() if not isinstance(inner, (dict, list))]
        elif not (isinstance(value, list) and len(value) > 8):  # the radial spectra are in --json
            flat.append((name, value))
    rows = []
    for name, value in flat:
        shown = f"{value:.4f}" if isinstance(value, float) else f"{value}"
        if name in floor and isinstance(value, float):
            shown += f"   (real held-out: {floor[name]:.4f})"
        rows.append((name, shown))
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {shown}" for name, shown in rows]


def classifier_facts(classifier: torch.nn.Module) -> tuple[int, int]:
    """(number of classes, feature dimension) of an evaluation classifier."""
    return classifier.config.num_classes, classifier.config.feature_dim
