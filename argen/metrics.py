"""Numbers: reconstruction quality, codebook health, and the distance between generated and real images.

Images are float tensors (B, C, H, W) in [-1, 1], so the data range is 2. Every function takes a batch and
returns the mean over it unless told otherwise.

- `psnr`: peak signal-to-noise ratio in dB, per image then averaged.
- `ssim`: Gaussian-window SSIM (Wang et al. 2004), differentiable, agreeing with torchmetrics'
  ``StructuralSimilarityIndexMeasure(gaussian_kernel=True, data_range=2)`` at its defaults.
- `multiscale_ssim`: MS-SSIM (Wang, Simoncelli, Bovik 2003) with few scales and a small window so that it works
  on 28×28 images, where the stock five-scale, 11-pixel version has nothing left to filter. Differentiable; the
  tokenizers use ``1 - multiscale_ssim`` as a loss.
- `codebook_statistics`: how many codes a set of token ids uses and how evenly (perplexity).
- `feature_metrics`: FID, KID and the Inception Score (computed by torchmetrics, from the `eval` extra) plus
  precision/recall (Kynkäänniemi et al. 2019, arXiv 1904.06991) and density/coverage (Naeem et al. 2020,
  arXiv 2002.09797), all on features that the caller computed once with a feature network (argen's classifier,
  or Inception when a user has its weights). Feeding precomputed features rather than images keeps the feature
  network's forward pass to one per image however many metrics use it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from argen.errors import ArgenError

# MS-SSIM's per-scale exponents from the paper (five scales, finest first); fewer scales take a renormalised prefix.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ArgenError(
            f"expected two image batches of one shape (B, C, H, W), got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def psnr(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of (B, C, H, W) images, computed per image and then averaged.

    Per-image averaging is what papers report; a batch-level MSE would let one bad image dominate. The MSE is
    floored at 1e-10 so identical images give 100 dB instead of infinity.
    """
    _check_pair(a, b)
    mse = (a.float() - b.float()).square().flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(data_range**2 / mse)).mean()


def _gaussian_window(size: int, sigma: float, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    coordinates = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    window = torch.exp(-0.5 * (coordinates / sigma).square())
    return window / window.sum()


def _ssim_and_contrast(
    a: torch.Tensor, b: torch.Tensor, *, window: int, sigma: float, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and mean contrast-structure term cs, both (B,).

    Images are reflect-padded so the maps keep the image size, as torchmetrics does: at 7×7 an unpadded 7-pixel
    window would leave a single value.
    """
    channels = a.shape[1]
    kernel = _gaussian_window(window, sigma, device=a.device, dtype=a.dtype)
    pad = window // 2
    # The five local moments of every channel are filtered in one separable depthwise pass: (B, 5C, H, W).
    stacked = F.pad(torch.cat([a, b, a * a, b * b, a * b], dim=1), (pad, pad, pad, pad), mode="reflect")
    groups = 5 * channels
    filtered = F.conv2d(stacked, kernel.view(1, 1, 1, window).expand(groups, 1, 1, window), groups=groups)
    filtered = F.conv2d(filtered, kernel.view(1, 1, window, 1).expand(groups, 1, window, 1), groups=groups)
    mu_a, mu_b, a2, b2, ab = filtered.split(channels, dim=1)
    # Variances clamped at 0: E[x²] - E[x]² can come out slightly negative in float arithmetic.
    var_a, var_b = (a2 - mu_a.square()).clamp_min(0), (b2 - mu_b.square()).clamp_min(0)
    cov = ab - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    contrast = (2 * cov + c2) / (var_a + var_b + c2)
    luminance = (2 * mu_a * mu_b + c1) / (mu_a.square() + mu_b.square() + c1)
    return (luminance * contrast).flatten(1).mean(1), contrast.flatten(1).mean(1)


def _check_window(a: torch.Tensor, window: int, *, scales: int = 1) -> None:
    smallest = min(a.shape[-2:]) // 2 ** (scales - 1)
    if smallest < window:
        raise ArgenError(
            f"images of {a.shape[-2]}×{a.shape[-1]} are too small for a {window}-pixel SSIM window at {scales} "
            f"scale(s) (the coarsest is {smallest} pixels): use a smaller window or fewer scales"
        )


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Structural similarity of (B, C, H, W) images with a Gaussian window; ``reduction="none"`` gives (B,)."""
    _check_pair(a, b)
    _check_window(a, window)
    values, _ = _ssim_and_contrast(a.float(), b.float(), window=window, sigma=sigma, data_range=data_range)
    return values.mean() if reduction == "mean" else values


def multiscale_ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    scales: int = 3,
    window: int = 7,
    sigma: float = 1.0,
    data_range: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """MS-SSIM of (B, C, H, W) images over ``scales`` dyadic scales; 28×28 works at the defaults (28, 14, 7).

    MS-SSIM = Π_{j<M} cs_j^{w_j} · ssim_M^{w_M} with the paper's weights (first ``scales`` of them, renormalised).
    cs and ssim are clamped to a small positive floor before the fractional powers, the usual fix (torchmetrics'
    ``normalize="relu"``) for the NaNs a negative base would give early in training.
    """
    _check_pair(a, b)
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise ArgenError(f"multiscale_ssim takes 1 to {len(MS_SSIM_WEIGHTS)} scales, got {scales}")
    _check_window(a, window, scales=scales)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=a.device)
    weights = weights / weights.sum()
    a, b = a.float(), b.float()
    result = torch.ones(a.shape[0], device=a.device)
    for scale in range(scales):
        value, contrast = _ssim_and_contrast(a, b, window=window, sigma=sigma, data_range=data_range)
        base = value if scale == scales - 1 else contrast
        result = result * base.clamp_min(1e-6) ** weights[scale]
        if scale < scales - 1:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return result.mean() if reduction == "mean" else result


def codebook_statistics(ids: torch.Tensor | Sequence[torch.Tensor], codebook_size: int) -> dict[str, float]:
    """Codebook health of token ids (any shapes, e.g. a list of (B, h, w) grids).

    Returns ``usage`` (fraction of the ``codebook_size`` codes that occur), ``used`` (their count) and
    ``perplexity`` (exp of the entropy of the code histogram: ``codebook_size`` when codes are used uniformly,
    1 when one code does everything).
    """
    grids = [ids] if isinstance(ids, torch.Tensor) else list(ids)
    flat = torch.cat([grid.reshape(-1) for grid in grids]).long()
    if flat.numel() and (flat.min() < 0 or flat.max() >= codebook_size):
        raise ArgenError(f"token ids must lie in [0, {codebook_size}), got {int(flat.min())}..{int(flat.max())}")
    counts = torch.bincount(flat.cpu(), minlength=codebook_size).double()
    probabilities = counts / counts.sum().clamp_min(1)
    entropy = -(probabilities * probabilities.clamp_min(1e-30).log()).sum()
    used = int((counts > 0).sum())
    return {"usage": used / codebook_size, "used": float(used), "perplexity": math.exp(float(entropy))}


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
        raise ArgenError("generator metrics need torchmetrics: pip install 'argen[eval]'") from None
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


# ---------------------------------------------------------------------------------------------------------------
# Spectral metrics: what next-frequency generation claims to get right (NFIG, arXiv 2503.07076).

SPECTRAL_BANDS = ("low", "mid", "high")


def _grayscale_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) or float [-1, 1] (N, C, H, W) → float64 (N, H, W) in [0, 1], channels averaged."""
    if images.dim() != 4:
        raise ArgenError(f"expected an image batch (N, C, H, W), got shape {tuple(images.shape)}")
    pixels = images.double() / 255 if images.dtype == torch.uint8 else (images.double() + 1) / 2
    return pixels.mean(1)


def radius_bins(height: int, width: int) -> torch.Tensor:
    """(H, W) integer radius of each centred DFT frequency, in cycles per image along the shorter side."""
    u = (torch.arange(height, dtype=torch.float64) - height // 2) * (min(height, width) / height)
    v = (torch.arange(width, dtype=torch.float64) - width // 2) * (min(height, width) / width)
    return torch.sqrt(u.view(-1, 1).square() + v.view(1, -1).square()).round().long()


@torch.no_grad()
def radial_power_spectrum(images: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """The radially averaged power spectrum (R,) of a set of images, mean over images; index r = radius in cycles
    per image (0 = DC, the mean brightness). ``images``: uint8 or [-1, 1] floats (N, C, H, W), channels averaged.

    Power is |FFT|² / (H·W)² of the [0, 1] grayscale image, so by Parseval the spectrum sums (over frequencies, not
    bins) to the mean squared pixel value; a radius bin holds the mean power of the frequencies that round to it.
    """
    height, width = images.shape[-2:]
    bins = radius_bins(height, width).flatten()
    counts = torch.bincount(bins).double()
    total = torch.zeros_like(counts)
    for start in range(0, images.shape[0], chunk):
        pixels = _grayscale_pixels(images[start : start + chunk])
        power = torch.fft.fftshift(torch.fft.fft2(pixels), dim=(-2, -1)).abs().square() / (height * width) ** 2
        total += torch.bincount(bins, weights=power.sum(0).flatten(), minlength=len(counts))
    return total / counts.clamp_min(1) / max(images.shape[0], 1)


def band_of_radius(radii: int) -> list[str]:
    """Which of low / mid / high each radius bin 1..R-1 falls in: thirds of the Nyquist radius (R-1 counts the
    corner bins into high); the DC bin 0 is left out of every band (it is brightness, not detail)."""
    nyquist = max(radii - 1, 1)
    return ["low" if r <= nyquist / 3 else "mid" if r <= 2 * nyquist / 3 else "high" for r in range(1, radii)]


def spectral_metrics(real_spectrum: torch.Tensor, spectrum: torch.Tensor) -> dict[str, float]:
    """How the radial power spectrum of generated (or reconstructed) images compares with the real images'.

    - ``energy_ratio_low/mid/high``: the images' power in each band over the real images' (1 is right; a blurred
      set has high < 1, a noisy one high > 1).
    - ``frequency_keep_score``: NFIG names a "Frequency Keep Score" but the text we could read does not pin its
      formula down, so this is our reading, stated here: the mean over radius bins r ≥ 1 of
      min(P(r), P_real(r)) / max(P(r), P_real(r)) — the fraction of each frequency's energy that is kept without
      excess, 1 for a matching spectrum, falling towards 0 as energy is lost (blur) or added (noise).
    - ``spectrum_log_distance``: mean over r ≥ 1 of |log10 P(r) − log10 P_real(r)| (0 for a matching spectrum).
    """
    if real_spectrum.shape != spectrum.shape:
        raise ArgenError(
            f"spectra of different image sizes ({real_spectrum.shape[0]} and {spectrum.shape[0]} radius bins): "
            "compare images of one size"
        )
    real, fake = real_spectrum[1:].double().clamp_min(1e-20), spectrum[1:].double().clamp_min(1e-20)
    bands = band_of_radius(len(real_spectrum))
    results = {}
    for band in SPECTRAL_BANDS:
        members = torch.tensor([name == band for name in bands])
        if members.any():
            results[f"energy_ratio_{band}"] = float(fake[members].sum() / real[members].sum())
    results["frequency_keep_score"] = float((torch.minimum(real, fake) / torch.maximum(real, fake)).mean())
    results["spectrum_log_distance"] = float((fake.log10() - real.log10()).abs().mean())
    return results
