"""Image-quality functions the tokenizers train with (and the metrics report): PSNR, SSIM, MS-SSIM, codebook use.

Images are float tensors (B, C, H, W) in [-1, 1], so the data range is 2. Every function takes a batch and
returns the mean over it unless told otherwise. They live here, in the tokenizer layer, because
``1 - multiscale_ssim`` is a tokenizer loss; `argen.metrics` re-exports them.

- `psnr`: peak signal-to-noise ratio in dB, per image then averaged.
- `ssim`: Gaussian-window SSIM (Wang et al. 2004), differentiable, agreeing with torchmetrics'
  ``StructuralSimilarityIndexMeasure(gaussian_kernel=True, data_range=2)`` at its defaults.
- `multiscale_ssim`: MS-SSIM (Wang, Simoncelli, Bovik 2003) with few scales and a small window so that it works
  on 28×28 images, where the stock five-scale, 11-pixel version has nothing left to filter. Differentiable; the
  tokenizers use ``1 - multiscale_ssim`` as a loss.
- `codebook_statistics`: how many codes a set of token ids uses and how evenly (perplexity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

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
