"""Spectral metrics (metrics.py): real against real scores perfect, a blurred copy loses high-band energy, a noisy
copy gains it, and `argen eval` / `eval-tokenizer` report them."""

import pytest
import torch
import torch.nn.functional as F

from argen.errors import ArgenError
from argen.metrics import radial_power_spectrum, spectral_metrics


def striped_images(count: int, size: int = 28, seed: int = 0) -> torch.Tensor:
    """uint8 (N, 1, size, size) images with random smooth blobs and sharp edges: energy in every band."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 1, size, size)
    for index in range(count):
        top, left = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        images[index, :, top : top + size // 3, left : left + size // 3] = 200
        images[index, :, :, ::4] += 40 * torch.rand(1, generator=generator)
    return images.clamp(0, 255).to(torch.uint8)


def blurred(images: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :]) / kernel.sum() ** 2
    return F.conv2d(images.float(), kernel.view(1, 1, 5, 5), padding=2).round().to(torch.uint8)


def test_real_against_real_is_perfect():
    spectrum = radial_power_spectrum(striped_images(64))
    results = spectral_metrics(spectrum, spectrum)
    assert results["frequency_keep_score"] == pytest.approx(1.0)
    assert results["spectrum_log_distance"] == pytest.approx(0.0)
    for band in ("low", "mid", "high"):
        assert results[f"energy_ratio_{band}"] == pytest.approx(1.0)


def test_blur_loses_high_band_energy_and_noise_gains_it():
    images = striped_images(128)
    real = radial_power_spectrum(images)
    blur = spectral_metrics(real, radial_power_spectrum(blurred(images)))
    generator = torch.Generator().manual_seed(1)
    noise = (images.float() + 30 * torch.randn(images.shape, generator=generator)).clamp(0, 255).to(torch.uint8)
    noisy = spectral_metrics(real, radial_power_spectrum(noise))
    assert blur["energy_ratio_high"] < 0.3 < noisy["energy_ratio_high"] and noisy["energy_ratio_high"] > 1.3
    assert blur["energy_ratio_high"] < blur["energy_ratio_mid"] < blur["energy_ratio_low"] <= 1.05
    assert blur["frequency_keep_score"] < 0.8 and noisy["frequency_keep_score"] < 0.9
    assert blur["spectrum_log_distance"] > 0.1 and noisy["spectrum_log_distance"] > 0.05


def test_parseval_and_scaling():
    images = striped_images(16)
    spectrum = radial_power_spectrum(images)  # bins hold mean power; weighted by bin counts they sum to E[x²]
    from argen.metrics import radius_bins

    counts = torch.bincount(radius_bins(28, 28).flatten()).double()
    assert float((spectrum * counts).sum()) == pytest.approx(float((images.double() / 255).square().mean()))
    same_as_float = radial_power_spectrum(images.float() / 127.5 - 1)  # [-1, 1] floats read as the same pixels
    assert torch.allclose(spectrum, same_as_float)


def test_mismatched_sizes_are_refused():
    with pytest.raises(ArgenError, match="one size"):
        spectral_metrics(radial_power_spectrum(striped_images(4, 28)), radial_power_spectrum(striped_images(4, 32)))
