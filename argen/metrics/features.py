"""Distances between generated and real images, on features a feature network computed once.

- `feature_metrics`: FID, KID and the Inception Score (computed by torchmetrics, from the `eval` extra) plus
  precision/recall (Kynkäänniemi et al. 2019, arXiv 1904.06991) and density/coverage (Naeem et al. 2020,
  arXiv 2002.09797), all on features that the caller computed once with a feature network (argen's classifier,
  or Inception when a user has its weights). Feeding precomputed features rather than images keeps the feature
  network's forward pass to one per image however many metrics use it.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from argen.errors import ArgenError, install_hint


class GivenFeatures(nn.Module):
    """The "feature network" handed to torchmetrics: the identity, because argen passes features, not images."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _torchmetrics_image():
    try:
        # the submodules, not torchmetrics.image, which hides these names when torch-fidelity is not installed
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError:
        raise ArgenError(f"generator metrics need torchmetrics: {install_hint('eval')}") from None
    return FrechetInceptionDistance, KernelInceptionDistance, InceptionScore


def nearest_neighbour_radii(features: torch.Tensor, k: int, *, chunk: int = 2048) -> torch.Tensor:
    """(N,) distance from each row of ``features`` (N, D) to its k-th nearest other row (the row itself excluded)."""
    radii = []
    for start in range(0, features.shape[0], chunk):
        distances = torch.cdist(features[start : start + chunk], features)  # (chunk, N)
        # the k+1 smallest include the zero distance of each row to itself
        radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def precision_recall_density_coverage(
    real: torch.Tensor, fake: torch.Tensor, *, nearest_k: int = 5, chunk: int = 2048
) -> dict[str, float]:
    """Manifold metrics of ``fake`` (M, D) against ``real`` (N, D) with k-nearest-neighbour balls.

    precision: fraction of fakes inside some real ball; recall: fraction of reals inside some fake ball
    (Kynkäänniemi et al. 2019). density: mean number of real balls containing a fake, divided by k; coverage:
    fraction of reals whose own ball contains some fake (Naeem et al. 2020). One k for all four, as in Naeem et
    al.'s reference implementation (k = 5).
    """
    if real.shape[0] <= nearest_k or fake.shape[0] <= nearest_k:
        raise ArgenError(f"precision/recall with k={nearest_k} needs more than {nearest_k} real and fake images")
    real, fake = real.double(), fake.double()
    real_radii = nearest_neighbour_radii(real, nearest_k, chunk=chunk)  # (N,)
    fake_radii = nearest_neighbour_radii(fake, nearest_k, chunk=chunk)  # (M,)
    fake_in_real_balls = torch.zeros(fake.shape[0], dtype=torch.long)
    real_has_fake = torch.zeros(real.shape[0], dtype=torch.bool)
    for start in range(0, fake.shape[0], chunk):
        distances = torch.cdist(fake[start : start + chunk], real)  # (chunk, N)
        inside = distances <= real_radii[None, :]
        fake_in_real_balls[start : start + chunk] = inside.sum(1)
        real_has_fake |= inside.any(0)
    real_in_fake_ball = torch.zeros(real.shape[0], dtype=torch.bool)
    for start in range(0, real.shape[0], chunk):
        distances = torch.cdist(real[start : start + chunk], fake)  # (chunk, M)
        real_in_fake_ball[start : start + chunk] = (distances <= fake_radii[None, :]).any(1)
    return {
        "precision": float((fake_in_real_balls > 0).double().mean()),
        "recall": float(real_in_fake_ball.double().mean()),
        "density": float(fake_in_real_balls.double().mean() / nearest_k),
        "coverage": float(real_has_fake.double().mean()),
    }


def feature_metrics(
    real_features: torch.Tensor,
    fake_features: torch.Tensor,
    *,
    fake_logits: torch.Tensor | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    inception_splits: int = 10,
    nearest_k: int = 5,
    manifold_limit: int = 10000,
    seed: int = 0,
) -> dict[str, float]:
    """FID, KID (mean, std), Inception Score (from ``fake_logits``) and precision/recall/density/coverage.

    ``real_features`` (N, D) and ``fake_features`` (M, D) come from one feature network. KID draws
    ``kid_subsets`` random subsets of min(``kid_subset_size``, N, M) images; the manifold metrics use at most
    ``manifold_limit`` images of each side (a fixed random subset: their cost grows with N·M). Every random choice
    uses ``seed``, so the same features give the same numbers.
    """
    if real_features.dim() != 2 or fake_features.dim() != 2 or real_features.shape[1] != fake_features.shape[1]:
        raise ArgenError(
            f"features must be (N, D) and (M, D) with one D, got {tuple(real_features.shape)} and "
            f"{tuple(fake_features.shape)}"
        )
    if real_features.shape[0] < 2 or fake_features.shape[0] < 2:
        raise ArgenError("FID needs at least 2 real and 2 generated images")
    frechet_class, kernel_class, inception_class = _torchmetrics_image()
    dimension = real_features.shape[1]
    real_features, fake_features = real_features.double().cpu(), fake_features.double().cpu()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # torchmetrics warns that KID and IS keep features in memory (that is the point: argen passes features)
        # and that one IS split has no standard deviation (it is then nan, as it should be)
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        warnings.filterwarnings("ignore", message=".*degrees of freedom is <= 0.*")
        # torchmetrics draws KID subsets and IS splits from the global generator; fix it, then put it back
        torch.manual_seed(seed)
        frechet = frechet_class(feature=GivenFeatures(dimension))
        frechet.update(real_features, real=True)
        frechet.update(fake_features, real=False)
        results = {"fid": float(frechet.compute())}
        subset_size = min(kid_subset_size, real_features.shape[0], fake_features.shape[0])
        kernel = kernel_class(feature=GivenFeatures(dimension), subsets=kid_subsets, subset_size=subset_size)
        kernel.update(real_features, real=True)
        kernel.update(fake_features, real=False)
        kid_mean, kid_std = kernel.compute()
        results.update(kid=float(kid_mean), kid_std=float(kid_std))
        if fake_logits is not None:
            inception = inception_class(feature=GivenFeatures(fake_logits.shape[1]), splits=inception_splits)
            inception.update(fake_logits.double().cpu())
            score, spread = inception.compute()
            results.update(inception_score=float(score), inception_score_std=float(spread))
        generator = torch.Generator().manual_seed(seed)
        real_subset = real_features[torch.randperm(real_features.shape[0], generator=generator)[:manifold_limit]]
        fake_subset = fake_features[torch.randperm(fake_features.shape[0], generator=generator)[:manifold_limit]]
    results.update(precision_recall_density_coverage(real_subset, fake_subset, nearest_k=nearest_k))
    return results
