"""Frequency-band residual quantization, NFIG's FR-VAE: "NFIG: Autoregressive Image Generation with
Next-Frequency Prediction" (Huang et al., arXiv 2503.07076; later versions titled "NFIG: Multi-Scale
Autoregressive Image Generation via Frequency Ordering"), its frequency-guided residual-quantized VAE (FR-VAE).

The latent f (B, D, n, n) is split into S frequency bands by masks M_i on its centred spectrum,

    f_i = IFFT(FFT(f) ⊙ M_i)                                    (FR-VAE band decomposition)

and band i is tokenized as an h_i × w_i grid (the ``scales``), coarse to fine, on one shared codebook. Band edges
grow with each band's share of the tokens,

    σ_i = σ_{i-1} + (h_i·w_i / Σ_j h_j·w_j)·σ_max,  σ_0 = 0      (FR-VAE mask thresholds)

so the first grid (1×1) gets the DC term, and the last band everything from σ_{S-1} out to the corner σ_max. A
frequency belongs to band i when σ_{i-1} ≤ r < σ_i (the last band is closed at infinity), so the masks partition
the spectrum exactly and Σ_i f_i = f up to float error.

Each band is quantized like one VAR scale (multiscale.py): area-downsample the band's target to h_i × w_i,
nearest code, lookup, bicubic upsample, VAR's φ_i; ``compose(ids, upto)`` is the sum of the first ``upto``
quantized bands, the input the next-frequency order feeds the transformer.

Choices the paper leaves open, and the config flag holding the alternative:

- Mask geometry, ``band_geometry``: "radial" (default) measures a frequency (u, v) by its Euclidean radius
  √(u² + v²) in cycles per latent, the reading of the paper's circular low-pass masks; "square" uses the
  Chebyshev radius max(|u|, |v|), whose bands are square rings that line up with the square token grids (an
  h×h grid represents |u|, |v| ≤ h/2 exactly). Both masks are symmetric under (u, v) → (-u, -v), so every band
  of a real latent is real. Note that with few tokens in early grids some radial bands can be empty on a small
  latent (7×7 with scales 1, 2, 3, 4, 5, 7: bands 2 and 3); those grids then carry only the earlier bands'
  quantization error.
- Edge scale: σ_max is the largest radius on the latent's frequency grid (the corner, √2·n/2 for radial
  masks), so the last threshold lands exactly on it and no frequency is left out; no flag, any other σ_max
  only moves the edges.
- Residual update, ``carry_error``: True (default) quantizes band i *plus what earlier bands left unexplained*,
  target_i = Σ_{j≤i} f_j - Σ_{j<i} f̂_j (the low-pass of f up to band i minus the reconstruction so far), so the
  last grid sees f - f̂ exactly like VAR's last scale and errors never accumulate. False quantizes each band on
  its own, target_i = f_i: the grids are then independent descriptions of disjoint bands, and the sum of the
  quantization errors stays in the reconstruction.

Implementation notes: the FFT runs on the D channels of the latent (torch.fft.fft2 over h, w; ``fftshift``
centres DC at index n // 2 for odd and even n); masks are fixed buffers computed from the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from argen.errors import ArgenError
from argen.tokenizers.autoencoder import Quantizer, Tokenizer
from argen.tokenizers.multiscale import ResidualQuantizer

if TYPE_CHECKING:
    from argen.tokenizers import TokenizerConfig

BAND_GEOMETRIES = ("radial", "square")


def band_masks(side: int, scales: Sequence[int], *, geometry: str = "radial") -> torch.Tensor:
    """The S band masks (S, side, side) of the centred spectrum (DC at index side // 2); 0/1 floats, a partition.

    ``scales[i]`` is the side of band i's token grid; band i spans radii [σ_{i-1}, σ_i) with the thresholds of
    FR-VAE growing in proportion to the bands' token counts.
    """
    if geometry not in BAND_GEOMETRIES:
        raise ArgenError(f"band_geometry must be one of {', '.join(BAND_GEOMETRIES)}, got {geometry!r}")
    frequencies = torch.arange(side, dtype=torch.float64) - side // 2  # fftshift order, cycles per latent
    u, v = frequencies.view(-1, 1), frequencies.view(1, -1)
    radius = torch.sqrt(u.square() + v.square()) if geometry == "radial" else torch.maximum(u.abs(), v.abs())
    tokens = torch.tensor([scale * scale for scale in scales], dtype=torch.float64)
    thresholds = torch.cumsum(tokens / tokens.sum(), 0) * radius.max()  # FR-VAE thresholds σ_i
    # Band index = how many thresholds lie at or below the radius; the last threshold (σ_max) is left out so
    # the corner frequencies fall in the last band instead of past it.
    band = torch.bucketize(radius, thresholds[:-1], right=True)
    return torch.nn.functional.one_hot(band, len(scales)).permute(2, 0, 1).float()


def split_bands(latent: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """latent (B, D, h, w) and masks (S, h, w) → bands (S, B, D, h, w), f_i = IFFT(FFT(f) ⊙ M_i)."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(latent.float()), dim=(-2, -1))  # (B, D, h, w), DC centred
    masked = spectrum.unsqueeze(0) * masks[:, None, None]  # (S, B, D, h, w)
    return torch.fft.ifft2(torch.fft.ifftshift(masked, dim=(-2, -1))).real.to(latent.dtype)


class FrequencyQuantizer(ResidualQuantizer):
    """latent (B, D, n, n) → one (B, h_i, w_i) id grid per frequency band, low to high."""

    def __init__(self, config: TokenizerConfig, side: int):
        super().__init__(config, side)
        self.carry_error = config.carry_error
        masks = band_masks(side, self.scales, geometry=config.band_geometry)
        # With carry_error each target needs the low-pass Σ_{j≤i} M_j rather than M_i alone.
        self.register_buffer("masks", masks.cumsum(0) if self.carry_error else masks, persistent=False)

    def targets(self, latent: torch.Tensor) -> torch.Tensor:
        return split_bands(latent, self.masks)  # (S, B, D, n, n): low-passes or bands

    def target(self, prepared: torch.Tensor, composed: torch.Tensor, scale: int) -> torch.Tensor:
        if self.carry_error:
            return prepared[scale] - composed  # band i plus what bands < i left unexplained
        return prepared[scale]  # band i alone


class FrequencyTokenizer(Tokenizer):
    """NFIG's FR-VAE: one grid per frequency band, sized by ``scales``."""

    def make_quantizer(self, config: TokenizerConfig) -> Quantizer:
        return FrequencyQuantizer(config, self.latent_side)
