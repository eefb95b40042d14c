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
from argen.tokenizers.autoencoder import Quantizer, Tokenizer, register_tokenizer
from argen.tokenizers.multiscale import ResidualQuantizer

if TYPE_CHECKING:
    from argen.tokenizers import TokenizerConfig

BAND_GEOMETRIES = ("radial", "square")
BAND_ALLOCATIONS = ("grid", "paper")


def centred_frequencies(side: int) -> torch.Tensor:
    """Integer frequencies of a length-``side`` DFT in fftshift order (DC at index side // 2), cycles per latent."""
    return torch.arange(side, dtype=torch.int64) - side // 2


def paper_bands(side: int, scales: Sequence[int], *, geometry: str = "radial") -> torch.Tensor:
    """Band index (side, side) of each centred frequency under FR-VAE's thresholds σ_i (``allocation="paper"``).

    σ_i = (tokens up to band i / all tokens) · r_max. Frequencies often sit exactly on a threshold (on a 16×16
    latent σ = 0.625 · √128 = √50, a radius that occurs), so the comparison is done in integers — r² · T² ≥ c_i² ·
    r_max² (radial) or r · T ≥ c_i · r_max (square) — instead of floating point, whose rounding put such ties in
    different bands on different machines.
    """
    frequencies = centred_frequencies(side)
    u, v = frequencies.view(-1, 1), frequencies.view(1, -1)
    cumulative = torch.cumsum(torch.tensor([scale * scale for scale in scales], dtype=torch.int64), 0)
    total = int(cumulative[-1])
    if geometry == "radial":
        measure = u.square() + v.square()  # r², exact
        left, right = measure * total * total, cumulative.square() * int(measure.max())
    else:
        measure = torch.maximum(u.abs(), v.abs())
        left, right = measure * total, cumulative * int(measure.max())
    # Band index = how many thresholds lie at or below the radius; the last threshold (σ_max) is left out so
    # the corner frequencies fall in the last band instead of past it.
    return (left.unsqueeze(-1) >= right[:-1]).sum(-1)


def grid_capacity(scale: int) -> int:
    """The largest Chebyshev frequency max(|u|, |v|) an h×h grid holds: ⌊h/2⌋, the Nyquist line of even h included.

    An odd grid represents |u|, |v| ≤ (h-1)/2 exactly. An even grid also samples its Nyquist frequency h/2, but only
    as a cosine (the +h/2 and -h/2 columns of its DFT are one column); we count that line as representable, because
    otherwise the 2×2 grid could hold nothing but the DC term of the 1×1 grid before it and its band would be empty.
    """
    return scale // 2


def grid_bands(side: int, scales: Sequence[int]) -> torch.Tensor:
    """Band index (side, side) of each centred frequency, tied to what each band's grid can represent.

    Band i takes the Chebyshev rings c = max(|u|, |v|) with cap(i-1) < c ≤ cap(i), cap = `grid_capacity` of its
    grid; bands whose grids have the same cap (sides 2k and 2k+1) split those rings by Euclidean radius, the lower
    radii to the earlier band, in proportion to their token counts h², cut at a radius boundary where that leaves
    both sides non-empty. Conjugate frequencies (u, v) and (-u, -v) always share a band, so each band of a real
    latent is real. Every band lies inside its grid's box, c ≤ ⌊h_i/2⌋ (``allocation="grid"``, the default).
    """
    frequencies = centred_frequencies(side)
    u, v = frequencies.view(-1, 1).expand(side, side), frequencies.view(1, -1).expand(side, side)
    chebyshev, radius2 = torch.maximum(u.abs(), v.abs()), u.square() + v.square()
    caps = [min(grid_capacity(scale), side // 2) for scale in scales]
    caps[-1] = side // 2  # the last grid is the latent itself: it holds every frequency
    band = torch.full((side, side), -1, dtype=torch.int64)
    lower = -1
    for cap in sorted(set(caps)):
        members = [index for index, value in enumerate(caps) if value == cap]
        if cap <= lower:
            continue
        # Conjugate pairs as units: index (a, b) ↔ the index of (-u, -v), kept together and ordered by radius.
        units: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for a in range(side):
            for b in range(side):
                if lower < int(chebyshev[a, b]) <= cap:
                    conjugate = ((-int(u[a, b])) + side // 2) % side, ((-int(v[a, b])) + side // 2) % side
                    units.setdefault(min((a, b), conjugate), []).append((a, b))
        ordered = sorted(units, key=lambda key: (int(radius2[key]), key))
        cuts = split_points([int(radius2[key]) for key in ordered], [scales[index] ** 2 for index in members])
        for member, start, stop in zip(members, [0, *cuts], [*cuts, len(ordered)]):
            for key in ordered[start:stop]:
                for a, b in units[key]:
                    band[a, b] = member
        lower = cap
    return band


def split_points(keys: list[int], weights: list[int]) -> list[int]:
    """Cut a sorted list into len(weights) non-empty runs sized in proportion to ``weights``, preferring cuts
    between unequal keys (radius boundaries). Returns the len(weights) - 1 cut indices."""
    total, count, cuts = sum(weights), len(keys), []
    for part in range(1, len(weights)):
        ideal = count * sum(weights[:part]) / total
        low, high = (cuts[-1] + 1 if cuts else 1), count - (len(weights) - part)
        candidates = [index for index in range(low, high + 1) if keys[index - 1] != keys[index]]
        candidates = candidates or list(range(low, high + 1))
        cuts.append(min(candidates, key=lambda index: (abs(index - ideal), index)))
    return cuts


def band_assignment(
    side: int, scales: Sequence[int], *, allocation: str = "grid", geometry: str = "radial"
) -> torch.Tensor:
    """Band index (side, side) of each frequency of the centred spectrum under ``allocation``."""
    if allocation not in BAND_ALLOCATIONS:
        raise ArgenError(f"band_allocation must be one of {', '.join(BAND_ALLOCATIONS)}, got {allocation!r}")
    if geometry not in BAND_GEOMETRIES:
        raise ArgenError(f"band_geometry must be one of {', '.join(BAND_GEOMETRIES)}, got {geometry!r}")
    if allocation == "grid":
        return grid_bands(side, scales)
    return paper_bands(side, scales, geometry=geometry)


def band_sizes(side: int, scales: Sequence[int], *, allocation: str = "grid", geometry: str = "radial") -> list[int]:
    """How many latent frequencies each band holds, low to high (what train-/eval-tokenizer print)."""
    assignment = band_assignment(side, scales, allocation=allocation, geometry=geometry)
    return torch.bincount(assignment.flatten(), minlength=len(scales)).tolist()


def band_masks(
    side: int, scales: Sequence[int], *, allocation: str = "grid", geometry: str = "radial", allow_empty: bool = False
) -> torch.Tensor:
    """The S band masks (S, side, side) of the centred spectrum (DC at index side // 2); 0/1 floats, a partition.

    ``scales[i]`` is the side of band i's token grid. A band without any frequency is refused unless
    ``allow_empty`` (its grid would only ever quantize the earlier bands' leftover error).
    """
    assignment = band_assignment(side, scales, allocation=allocation, geometry=geometry)
    masks = torch.nn.functional.one_hot(assignment, len(scales)).permute(2, 0, 1).float()
    sizes = masks.sum((1, 2)).long().tolist()
    if not allow_empty and 0 in sizes:
        raise ArgenError(
            f"band allocation {allocation!r} ({geometry}) leaves band(s) "
            f"{', '.join(str(i) for i, size in enumerate(sizes) if size == 0)} empty on a {side}×{side} latent with "
            f"scales {list(scales)} (frequencies per band {sizes}); use --band-allocation grid, other --scales, "
            "or --allow-empty-bands"
        )
    return masks


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
        if torch.empty(0).is_meta:
            # Built on the meta device to check the declared sizes (`argen.release_checks`): only the masks' shape
            # counts there, and computing them is a Python loop over the n² frequencies.
            masks, self.band_sizes = torch.empty(len(self.scales), side, side), []
        else:
            masks = band_masks(
                side,
                self.scales,
                allocation=config.band_allocation,
                geometry=config.band_geometry,
                allow_empty=config.allow_empty_bands,
            )
            self.band_sizes = masks.sum((1, 2)).long().tolist()  # frequencies per band, printed by the commands
        # With carry_error each target needs the low-pass Σ_{j≤i} M_j rather than M_i alone.
        self.register_buffer("masks", masks.cumsum(0) if self.carry_error else masks, persistent=False)

    def targets(self, latent: torch.Tensor) -> torch.Tensor:
        return split_bands(latent, self.masks)  # (S, B, D, n, n): low-passes or bands

    def target(self, prepared: torch.Tensor, composed: torch.Tensor, scale: int) -> torch.Tensor:
        if self.carry_error:
            return prepared[scale] - composed  # band i plus what bands < i left unexplained
        return prepared[scale]  # band i alone


@register_tokenizer
class FrequencyTokenizer(Tokenizer):
    """NFIG's FR-VAE: one grid per frequency band, sized by ``scales``."""

    kind = "frequency"
    method, paper, arxiv = "frequency-band residual quantization", "NFIG", "2503.07076"
    rank = 40

    def make_quantizer(self, config: TokenizerConfig) -> Quantizer:
        return FrequencyQuantizer(config, self.latent_side)
