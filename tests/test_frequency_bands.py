"""NFIG's frequency bands (tokenizers/frequency.py): both allocations partition the spectrum exactly; the grid-tied
one leaves no band empty on any latent from 4×4 to 32×32 with the default scales and keeps each band inside what its
grid can represent; a configuration with an empty band is refused unless explicitly allowed; old releases load with
the allocation they were trained with."""

import json

import pytest
import torch

from argen.errors import ArgenError
from argen.tokenizers import TokenizerConfig, build_tokenizer, default_scales
from argen.tokenizers.frequency import band_assignment, band_masks, band_sizes, centred_frequencies, split_bands

SIDES = list(range(4, 33))


@pytest.mark.parametrize("allocation", ["grid", "paper"])
@pytest.mark.parametrize("side", [4, 5, 7, 8, 16, 31, 32])
def test_bands_partition_the_spectrum(allocation, side):
    scales = default_scales(side)
    masks = band_masks(side, scales, allocation=allocation, allow_empty=True)
    assert masks.shape == (len(scales), side, side)
    assert torch.equal(masks.sum(0), torch.ones(side, side))  # every frequency in exactly one band
    latent = torch.randn(2, 3, side, side, dtype=torch.float64)
    bands = split_bands(latent, masks.double())
    assert torch.allclose(bands.sum(0), latent, atol=1e-5)  # Σ_i f_i = f (split_bands works in float32)


@pytest.mark.parametrize("side", SIDES)
def test_grid_allocation_fills_every_band_inside_its_grid(side):
    scales = default_scales(side)
    assignment = band_assignment(side, scales, allocation="grid")
    sizes = torch.bincount(assignment.flatten(), minlength=len(scales)).tolist()
    assert 0 not in sizes, f"{side}×{side}, scales {scales}: frequencies per band {sizes}"
    frequencies = centred_frequencies(side)
    chebyshev = torch.maximum(frequencies.view(-1, 1).abs(), frequencies.view(1, -1).abs())
    for band, scale in enumerate(scales):
        inside = chebyshev[assignment == band]
        assert int(inside.max()) <= scale // 2, (
            f"band {band} (grid {scale}×{scale}) holds frequency {int(inside.max())}"
        )
    # bands are ordered coarse to fine: a later band never holds a lower Chebyshev ring than an earlier one's lowest
    lowest = [int(chebyshev[assignment == band].min()) for band in range(len(scales))]
    assert lowest == sorted(lowest)


@pytest.mark.parametrize("side", [4, 7, 8, 16])
def test_grid_bands_are_conjugate_symmetric(side):
    # (u, v) and (-u, -v) share a band, so every band of a real latent is real
    assignment = band_assignment(side, default_scales(side), allocation="grid")
    index = (-centred_frequencies(side)) % side  # position of -u in fftshift order (mod side)
    index = (index + side // 2) % side
    assert torch.equal(assignment, assignment[index][:, index])
    latent = torch.randn(1, 2, side, side, dtype=torch.float64)
    masks = band_masks(side, default_scales(side)).double()
    spectrum = torch.fft.fftshift(torch.fft.fft2(latent), dim=(-2, -1)).unsqueeze(0) * masks[:, None, None]
    imaginary = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).imag
    assert imaginary.abs().max() < 1e-10


def test_the_shipped_configuration_counts():
    assert band_sizes(7, [1, 2, 3, 4, 5, 7], allocation="paper") == [1, 0, 0, 4, 16, 28]  # the count
    assert band_sizes(7, [1, 2, 3, 4, 5, 7], allocation="grid") == [1, 4, 4, 4, 12, 24]
    paper16 = band_sizes(16, default_scales(16), allocation="paper")
    assert paper16 == [1, 0, 0, 0, 0, 8, 12, 36, 92, 107]  # exact integer thresholds


def test_empty_bands_are_refused_unless_allowed():
    with pytest.raises(ArgenError, match=r"leaves band\(s\) 1, 2 empty.*--band-allocation grid"):
        band_masks(7, [1, 2, 3, 4, 5, 7], allocation="paper")
    config = TokenizerConfig(kind="frequency", width=8, latent_dim=8, codebook_size=32, band_allocation="paper")
    with pytest.raises(ArgenError, match="empty"):
        build_tokenizer(config)
    config.allow_empty_bands = True
    assert build_tokenizer(config).quantizer.band_sizes == [1, 0, 0, 4, 16, 28]
    with pytest.raises(ArgenError, match="band_allocation"):
        band_masks(7, [1, 7], allocation="rings")


def test_a_release_without_band_allocation_loads_as_paper(tmp_path):
    from argen.checkpoint import save_release
    from argen.tokenizers import load_tokenizer

    config = TokenizerConfig(
        kind="frequency", width=8, latent_dim=8, codebook_size=32, band_allocation="paper", allow_empty_bands=True
    )
    tokenizer = build_tokenizer(config)
    save_release(tmp_path, kind="tokenizer", config=config, state_dict=tokenizer.state_dict())
    document = json.loads((tmp_path / "config.json").read_text())
    for key in ("band_allocation", "allow_empty_bands"):  # what a release written before the choice existed holds
        del document["config"][key]
    (tmp_path / "config.json").write_text(json.dumps(document))
    loaded, _ = load_tokenizer(tmp_path)
    assert loaded.config.band_allocation == "paper"
    assert loaded.quantizer.band_sizes == [1, 0, 0, 4, 16, 28]
