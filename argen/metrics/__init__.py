"""Numbers (step 7 of the flow): reconstruction quality, codebook health, and generated against real images.

- image quality (`psnr`, `ssim`, `multiscale_ssim`, `codebook_statistics`): defined in `argen.tokenizers.losses`,
  because the tokenizers train with them, and re-exported here;
- `features`: FID, KID, Inception Score, precision/recall, density/coverage on precomputed features;
- `spectral`: the radially averaged power spectrum and its per-band distances;
- `classifier`: the small CNN whose features and logits drive the generator metrics;
- `evaluate`: `evaluate_tokenizer` and `evaluate_generator`, what `argen eval-tokenizer` and `argen eval` run.
"""

from argen.metrics.features import (
    GivenFeatures,
    feature_metrics,
    nearest_neighbour_radii,
    precision_recall_density_coverage,
)
from argen.metrics.spectral import (
    SPECTRAL_BANDS,
    band_of_radius,
    radial_power_spectrum,
    radius_bins,
    spectral_metrics,
)
from argen.tokenizers.losses import codebook_statistics, multiscale_ssim, psnr, ssim

__all__ = [
    "SPECTRAL_BANDS",
    "GivenFeatures",
    "band_of_radius",
    "codebook_statistics",
    "feature_metrics",
    "multiscale_ssim",
    "nearest_neighbour_radii",
    "precision_recall_density_coverage",
    "psnr",
    "radial_power_spectrum",
    "radius_bins",
    "spectral_metrics",
    "ssim",
]
