"""Spectral metrics: what next-frequency generation claims to get right (NFIG, arXiv 2503.07076).

The radially averaged power spectrum of generated and real images, and its distance per frequency band.
"""

from __future__ import annotations

import torch

from argen.errors import ArgenError

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
