"""Automatic interpretation of latents without a language model, after Paulo et al., "Automatically Interpreting
Millions of Features in Large Language Models" (EleutherAI's delphi, arXiv 2410.13928).

delphi shows an explainer model activating examples sampled across the activation quantiles (§3.1) and asks a
scorer model to use the explanation: detection (§3.3.1, does this example activate the latent?) and fuzzing
(§3.3.2, are the highlighted tokens the ones it fires on?). Here the explainer is a search and the scorer is exact:

- What argen knows of every sequence position is a table of fields: class, step (= band or scale), row, col, the
  region of the image (thirds), the target token id, and local statistics of the decoded cell (mean intensity,
  edge strength, colour saturation).
- An explanation is a predicate: a conjunction of at most two atoms ``lower ≤ field ≤ upper``, searched per latent
  for the best F1 separating quantile-sampled activating examples from random non-activating ones.
- Detection scores the predicate on held-out activating and non-activating examples (precision, recall, F1, AUC);
  fuzzing, on held-out activating sequences, marks either the positions where the latent fires or as many random
  positions of the same sequence and asks whether the marks satisfy the predicate (≥ half of them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

CATEGORICAL = ("label", "token")
ORDERED = ("step", "row", "col", "vertical", "horizontal")
CONTINUOUS = ("intensity", "edge", "saturation")


@dataclass(frozen=True)
class Atom:
    name: str
    lower: float
    upper: float

    def holds(self, table: dict[str, Tensor]) -> Tensor:
        values = table[self.name].float()
        return (values >= self.lower) & (values <= self.upper)

    def describe(self) -> str:
        if self.lower == self.upper:
            return f"{self.name} = {self.lower:g}"
        if self.lower == -float("inf"):
            return f"{self.name} ≤ {self.upper:.3g}"
        if self.upper == float("inf"):
            return f"{self.name} ≥ {self.lower:.3g}"
        return f"{self.lower:.3g} ≤ {self.name} ≤ {self.upper:.3g}"


@dataclass(frozen=True)
class Predicate:
    atoms: tuple[Atom, ...]

    def degree(self, table: dict[str, Tensor]) -> Tensor:
        """(P,) the share of the atoms that hold: 1 where the predicate holds, a graded score for AUC."""
        return torch.stack([atom.holds(table).float() for atom in self.atoms]).mean(0)

    def holds(self, table: dict[str, Tensor]) -> Tensor:
        return self.degree(table) == 1

    def describe(self) -> str:
        return " and ".join(atom.describe() for atom in self.atoms)


@dataclass
class Interpretation:
    predicate: Predicate
    detection: dict[str, float] = field(default_factory=dict)
    fuzzing: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, str | dict[str, float]]:
        return {"explanation": self.predicate.describe(), "detection": self.detection, "fuzzing": self.fuzzing}


def cell_statistics(images: Tensor, table: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per position (P,) mean intensity, edge strength and colour saturation of its image region, in [0, 1].

    ``images`` uint8 (N, C, H, W) decoded sequences; ``table`` the positions (sequence, row, col, grid_height,
    grid_width). A position's region is its grid cell scaled to the image.
    """
    pixels = images.float() / 255
    intensity = pixels.mean(1, keepdim=True)  # (N, 1, H, W)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
    gx = F.conv2d(F.pad(intensity, (1, 1, 1, 1), mode="replicate"), sobel.view(1, 1, 3, 3))
    gy = F.conv2d(F.pad(intensity, (1, 1, 1, 1), mode="replicate"), sobel.t().reshape(1, 1, 3, 3))
    saturation = pixels.amax(1, keepdim=True) - pixels.amin(1, keepdim=True)
    maps = torch.cat([intensity, (gx.square() + gy.square()).sqrt(), saturation], dim=1)  # (N, 3, H, W)
    out = torch.zeros(3, table["sequence"].numel())
    sizes = torch.stack([table["grid_height"], table["grid_width"]], 1)
    for size in sizes.unique(dim=0):
        chosen = (sizes == size).all(1)
        pooled = F.adaptive_avg_pool2d(maps, (int(size[0]), int(size[1])))  # (N, 3, h, w)
        sequence, row, col = table["sequence"][chosen], table["row"][chosen], table["col"][chosen]
        out[:, chosen] = pooled[sequence, :, row, col].t()
    return {"intensity": out[0], "edge": out[1], "saturation": out[2]}


def with_regions(table: dict[str, Tensor]) -> dict[str, Tensor]:
    """The table plus ``vertical``/``horizontal``: which third of the image (0, 1, 2) a position's cell is in."""
    return {
        **table,
        "vertical": (3 * table["row"] + 1) // table["grid_height"].clamp_min(1),
        "horizontal": (3 * table["col"] + 1) // table["grid_width"].clamp_min(1),
    }


def sample_examples(
    activation: Tensor, *, count: int = 200, quantiles: int = 10, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """(activating, non-activating) position indices: ``count`` activating ones, an equal share from each of
    ``quantiles`` quantile bins of the positive activations (delphi §3.1), and ``count`` random positions where the
    latent is 0."""
    positive = (activation > 0).nonzero().squeeze(1)
    ranked = positive[activation[positive].argsort()]
    chosen = []
    for part in ranked.tensor_split(quantiles):
        if part.numel():
            take = torch.randperm(part.numel(), generator=generator)[: max(1, count // quantiles)]
            chosen.append(part[take])
    zero = (activation <= 0).nonzero().squeeze(1)
    negatives = zero[torch.randperm(zero.numel(), generator=generator)[:count]]
    activating = torch.cat(chosen) if chosen else positive
    return activating, negatives


def candidate_atoms(table: dict[str, Tensor], activating: Tensor, *, per_field: int = 12) -> list[Atom]:
    """Atoms worth trying: the values frequent among the activating examples (categorical fields), ranges cut at
    their distinct values or quartiles (ordered and continuous ones)."""
    atoms = []
    for name in CATEGORICAL:
        if name in table:
            values, counts = table[name][activating].unique(return_counts=True)
            for value in values[counts.argsort(descending=True)][:per_field].tolist():
                if value >= 0:
                    atoms.append(Atom(name, value, value))
    for name in (*ORDERED, *CONTINUOUS):
        if name not in table:
            continue
        values = table[name][activating].float()
        cuts = values.unique()
        if cuts.numel() > per_field:
            cuts = values.quantile(torch.linspace(0, 1, per_field))
        cuts = cuts.unique().tolist()
        atoms += [Atom(name, -float("inf"), cut) for cut in cuts] + [Atom(name, cut, float("inf")) for cut in cuts]
        if name in ORDERED:
            atoms += [Atom(name, cut, cut) for cut in cuts]
        atoms += [Atom(name, low, high) for low, high in zip(cuts, cuts[1:])]
    return atoms


def binary_scores(predicted: Tensor, truth: Tensor, degree: Tensor) -> dict[str, float]:
    """precision, recall, F1, accuracy of ``predicted`` (bool) against ``truth`` (bool); AUC of ``degree``."""
    true_positive = float((predicted & truth).sum())
    precision = true_positive / max(float(predicted.sum()), 1.0)
    recall = true_positive / max(float(truth.sum()), 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    accuracy = float((predicted == truth).float().mean())
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy, "auc": auc(degree, truth)}


def auc(score: Tensor, truth: Tensor) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted half."""
    positive, negative = score[truth].float(), score[~truth].float()
    if positive.numel() == 0 or negative.numel() == 0:
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).float().mean()
    ties = (positive[:, None] == negative[None, :]).float().mean()
    return float(greater + 0.5 * ties)


def explain(table: dict[str, Tensor], activating: Tensor, negatives: Tensor, *, keep: int = 10) -> Predicate:
    """The predicate (one atom, or two in conjunction) with the best F1 on these examples; fewer atoms win ties."""
    examples = torch.cat([activating, negatives])
    truth = torch.cat([torch.ones_like(activating, dtype=torch.bool), torch.zeros_like(negatives, dtype=torch.bool)])
    sample = {name: values[examples] for name, values in table.items()}

    def f1(predicate: Predicate) -> float:
        predicted = predicate.holds(sample)
        return binary_scores(predicted, truth, predicted.float())["f1"]

    singles = sorted((Predicate((atom,)) for atom in candidate_atoms(table, activating)), key=f1, reverse=True)
    best, best_score = singles[0], f1(singles[0])
    top = singles[:keep]
    for first_index, first in enumerate(top):
        for second in top[first_index + 1 :]:
            if first.atoms[0].name == second.atoms[0].name:
                continue
            pair = Predicate(first.atoms + second.atoms)
            score = f1(pair)
            if score > best_score + 1e-9:
                best, best_score = pair, score
    return best


def detection_scores(predicate: Predicate, table: dict[str, Tensor], activating: Tensor, negatives: Tensor) -> dict:
    """Detection (delphi §3.3.1) on held-out examples."""
    examples = torch.cat([activating, negatives])
    truth = torch.cat([torch.ones_like(activating, dtype=torch.bool), torch.zeros_like(negatives, dtype=torch.bool)])
    sample = {name: values[examples] for name, values in table.items()}
    return binary_scores(predicate.holds(sample), truth, predicate.degree(sample))


def fuzzing_scores(
    predicate: Predicate, table: dict[str, Tensor], activation: Tensor, sequences: Tensor, *,
    generator: torch.Generator | None = None,
) -> dict:  # fmt: skip
    """Fuzzing (delphi §3.3.2) on the activating ``sequences``: correctly marked (the firing positions) vs fuzzed
    (as many random positions of that sequence); the judge says "correct" when ≥ half the marks satisfy the
    predicate."""
    holds = predicate.holds(table).float()
    degrees, truth = [], []
    for sequence in sequences.tolist():
        rows = (table["sequence"] == sequence).nonzero().squeeze(1)
        firing = rows[activation[rows] > 0]
        if firing.numel() == 0:
            continue
        fuzzed = rows[torch.randperm(rows.numel(), generator=generator)[: firing.numel()]]
        degrees += [holds[firing].mean(), holds[fuzzed].mean()]
        truth += [True, False]
    if not degrees:
        return {}
    degree, truth_tensor = torch.stack(degrees), torch.tensor(truth)
    return binary_scores(degree >= 0.5, truth_tensor, degree)


def interpret_latent(
    activation: Tensor, table: dict[str, Tensor], *, count: int = 200, seed: int = 0
) -> Interpretation | None:
    """Explain one latent from half of its sampled examples and score the explanation on the other half; None for a
    latent that never fires. ``activation`` (P,) over the positions of ``table``."""
    generator = torch.Generator().manual_seed(seed)
    activating, negatives = sample_examples(activation, count=count, generator=generator)
    if activating.numel() < 2 or negatives.numel() < 2:
        return None
    activating = activating[torch.randperm(activating.numel(), generator=generator)]
    explain_positive, test_positive = activating.tensor_split(2)
    explain_negative, test_negative = negatives.tensor_split(2)
    predicate = explain(table, explain_positive, explain_negative)
    held_sequences = table["sequence"][test_positive].unique()[:50]
    return Interpretation(
        predicate,
        detection_scores(predicate, table, test_positive, test_negative),
        fuzzing_scores(predicate, table, activation, held_sequences, generator=generator),
    )
