"""Tokenizers (images ⇄ ids) and the metrics they log: contracts over the registry, round trips, band partition,
tiny training runs, dead-code restart, FSQ bijection, refusals."""

import json
import math
from dataclasses import asdict

import pytest
import torch

from argen.errors import ArgenError
from argen.metrics import codebook_statistics, multiscale_ssim, psnr, ssim
from argen.tokenizers import TOKENIZERS, TokenizerConfig, build_tokenizer
from argen.tokenizers.frequency import band_masks, split_bands
from argen.tokenizers.fsq import FiniteScalarQuantizer
from argen.tokenizers.vq import Codebook

SCALES = {28: [1, 2, 4, 7], 32: [1, 2, 3, 5, 8]}  # image size → grid sides ending at the 4× downsampled latent


def tiny_config(kind: str, *, channels: int = 1, image_size: int = 28, **overrides) -> TokenizerConfig:
    values = dict(
        kind=kind,
        channels=channels,
        image_size=image_size,
        width=8,
        latent_dim=8,
        codebook_size=64,
        code_dim=4,
        fsq_levels=[4, 4, 3],
        scales=SCALES.get(image_size, [1, 2, image_size // 4]),
        phi_count=2,
    )
    values.update(overrides)
    return TokenizerConfig(**values)


def structured_images(count: int, *, channels: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Random but learnable images in [-1, 1]: a bright axis-aligned rectangle on a dark, slightly noisy field."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.full((count, channels, size, size), -0.8)
    corners = torch.randint(0, size // 2, (count, 2), generator=generator)
    extents = torch.randint(size // 4, size // 2, (count, 2), generator=generator)
    brightness = torch.rand(count, channels, generator=generator) * 0.8 + 0.2
    for index in range(count):
        (top, left), (height, width) = corners[index].tolist(), extents[index].tolist()
        images[index, :, top : top + height, left : left + width] = brightness[index].view(-1, 1, 1)
    return (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(-1, 1)


CONTRACT_CASES = [(kind, channels, size) for kind in TOKENIZERS for channels in (1, 3) for size in (28, 32)] + [
    ("frequency-square", 1, 28),
    ("frequency-nocarry", 3, 32),
]


def build_case(kind: str, channels: int, size: int):
    overrides = {}
    if kind == "frequency-square":
        overrides = {"band_allocation": "paper", "band_geometry": "square", "allow_empty_bands": True}
        kind = "frequency"
    elif kind == "frequency-nocarry":
        kind, overrides = "frequency", {"carry_error": False}
    torch.manual_seed(0)
    return build_tokenizer(tiny_config(kind, channels=channels, image_size=size, **overrides)).eval()


@pytest.mark.parametrize("kind,channels,size", CONTRACT_CASES)
def test_tokenizer_contract(kind, channels, size):
    tokenizer = build_case(kind, channels, size)
    images = torch.rand(3, channels, size, size) * 2 - 1
    ids = tokenizer.encode(images)

    # encode: one LongTensor (B, h_i, w_i) per grid, ids in [0, codebook_size)
    assert [tuple(grid.shape[1:]) for grid in ids] == tokenizer.grid_shapes
    assert all(grid.dtype == torch.long and grid.shape[0] == 3 for grid in ids)
    assert all(0 <= int(grid.min()) and int(grid.max()) < tokenizer.codebook_size for grid in ids)
    if kind in ("vq", "fsq", "llamagen-vq"):
        assert tokenizer.grid_shapes == [(size // 4, size // 4)]
    else:
        assert tokenizer.grid_shapes[-1] == (size // 4, size // 4) and len(tokenizer.grid_shapes) > 1

    # decode: images of the input's shape, exactly decoder(compose(ids, all))
    decoded = tokenizer.decode(ids)
    assert decoded.shape == images.shape and decoded.dtype == torch.float32
    steps = len(tokenizer.grid_shapes)
    with torch.no_grad():
        assert torch.equal(decoded, tokenizer.decoder(tokenizer.compose(ids, steps)))
        # the forward pass reconstructs from the same codes the ids name (straight-through adds float error only)
        reconstruction, _, _ = tokenizer(images)
        torch.testing.assert_close(reconstruction, decoded, atol=1e-4, rtol=1e-4)
        quantized = tokenizer.quantizer(tokenizer.encoder(images)).quantized
        torch.testing.assert_close(quantized, tokenizer.compose(ids, steps), atol=1e-5, rtol=1e-5)

    # compose: zeros from no grids, the latent shape always; each grid adds its share
    latent_shape = (3, tokenizer.latent_dim, size // 4, size // 4)
    assert torch.equal(tokenizer.compose(ids, 0), torch.zeros(latent_shape))
    partial = [tokenizer.compose(ids, upto) for upto in range(steps + 1)]
    assert all(tensor.shape == latent_shape for tensor in partial)

    # ids → codes → ids: quantizing each grid's code vectors again gives the ids back, for encoded ids and for
    # arbitrary ones (every code, not only the ones this batch happens to use)
    embedded = tokenizer.embed(ids)
    assert [tuple(codes.shape[-2:]) for codes in embedded] == tokenizer.grid_shapes
    assert all(codes.shape[:2] == (3, tokenizer.quantizer.embed_dim) for codes in embedded)
    assert all(torch.equal(a, b) for a, b in zip(tokenizer.codes_to_ids(embedded), ids))
    generator = torch.Generator().manual_seed(1)
    random_ids = [
        torch.randint(tokenizer.codebook_size, (5, *shape), generator=generator) for shape in tokenizer.grid_shapes
    ]
    assert all(torch.equal(a, b) for a, b in zip(tokenizer.codes_to_ids(tokenizer.embed(random_ids)), random_ids))


@pytest.mark.parametrize("kind", list(TOKENIZERS))
def test_training_loss_logs_and_gradients(kind):
    tokenizer = build_tokenizer(tiny_config(kind, image_size=16, scales=[1, 2, 4])).train()
    loss, logs = tokenizer.training_loss(structured_images(4))
    assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
    assert {"psnr", "usage", "reconstruction", "ssim"} <= set(logs)
    assert 0 < logs["usage"] <= 1 and all(isinstance(value, float) for value in logs.values())
    if kind != "fsq":
        assert {"codebook", "commitment"} <= set(logs)
    loss.backward()
    encoder_gradients = [p.grad for p in tokenizer.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in encoder_gradients)
    assert any(g.abs().sum() > 0 for g in encoder_gradients)  # the straight-through path reaches the encoder


@pytest.mark.parametrize("kind", list(TOKENIZERS))
def test_encode_never_changes_the_codebook(kind):
    tokenizer = build_tokenizer(tiny_config(kind)).train()
    before = {name: value.clone() for name, value in tokenizer.state_dict().items()}
    tokenizer.encode(structured_images(4, size=28))
    assert all(torch.equal(before[name], value) for name, value in tokenizer.state_dict().items())


def train(tokenizer, images: torch.Tensor, *, steps: int = 100, batch: int = 16, lr: float = 3e-3) -> None:
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    tokenizer.train()
    for _ in range(steps):
        loss, _ = tokenizer.training_loss(images[torch.randint(len(images), (batch,), generator=generator)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("kind", list(TOKENIZERS))
def test_short_training_lowers_the_loss(kind):
    torch.manual_seed(0)
    tokenizer = build_tokenizer(tiny_config(kind, image_size=16, scales=[1, 2, 4], blocks=0))
    images = structured_images(256)
    held_out = structured_images(64, seed=1)

    def evaluate() -> tuple[float, float]:
        tokenizer.eval()
        with torch.no_grad():
            loss, logs = tokenizer.training_loss(held_out)
        return float(loss), logs["psnr"]

    loss_before, psnr_before = evaluate()
    train(tokenizer, images)
    loss_after, psnr_after = evaluate()
    assert loss_after < 0.6 * loss_before, (loss_before, loss_after)
    assert psnr_after > psnr_before + 3, (psnr_before, psnr_after)


def test_dead_code_restart_moves_unused_codes_onto_encoder_outputs():
    torch.manual_seed(0)
    codebook = Codebook(8, 3, normalized=False, restart_after=2)
    # Codes start "dead": the first step re-initialises every code no token chose from this step's vectors.
    candidates = torch.tensor([[5.0, 5.0, 5.0]])
    assert codebook.restart([torch.tensor([0])], candidates) == 7
    assert torch.allclose(codebook.weight[1:], candidates.expand(7, 3), atol=0.5)
    # From then on a code must stay unused for restart_after steps before it moves.
    weights = codebook.weight.detach().clone()
    assert codebook.restart([torch.tensor([0, 1, 2, 3])], candidates) == 0
    assert torch.equal(codebook.weight, weights)
    assert codebook.restart([torch.tensor([0, 1, 2, 3])], -candidates) == 4  # codes 4..7 idle for 2 steps
    assert torch.equal(codebook.weight[:4], weights[:4])
    assert torch.allclose(codebook.weight[4:], -candidates.expand(4, 3), atol=0.5)
    # restart_after = 0 turns restarts off.
    frozen = Codebook(8, 3, normalized=True, restart_after=0)
    weights = frozen.weight.detach().clone()
    assert frozen.restart([torch.tensor([0])], candidates) == 0 and torch.equal(frozen.weight, weights)


def test_vq_restart_raises_codebook_usage():
    images = structured_images(256)

    def usage(restart_after: int) -> float:
        torch.manual_seed(0)
        config = tiny_config("vq", image_size=16, codebook_size=128, restart_after=restart_after, blocks=0)
        tokenizer = build_tokenizer(config)
        # A collapsed codebook (every code the same vector): ties go to the lowest index, so without restarts the
        # other codes never win a nearest-neighbour contest and never receive a gradient.
        with torch.no_grad():
            weight = tokenizer.quantizer.codebook.weight
            weight.copy_(weight[:1].expand_as(weight))
        train(tokenizer, images, steps=60)
        tokenizer.eval()
        return tokenizer.codebook_statistics(tokenizer.encode(images))["usage"]

    without, with_restart = usage(0), usage(5)
    assert with_restart > 0.5 > without, (without, with_restart)


@pytest.mark.parametrize("levels", [[8, 8, 4, 4], [8, 5, 5, 5], [2, 3], [7]])
def test_fsq_ids_and_codes_are_a_bijection(levels):
    quantizer = FiniteScalarQuantizer(tiny_config("fsq", fsq_levels=levels), side=2)
    size = math.prod(levels)
    assert quantizer.codebook_size == size
    ids = torch.arange(size).view(1, 1, size)
    codes = quantizer.embed([ids])[0]  # (1, d, 1, size)
    assert codes.abs().max() <= 1
    assert torch.unique(codes.squeeze(0).squeeze(1).T, dim=0).shape[0] == size  # all codes distinct
    assert torch.equal(quantizer.codes_to_ids([codes])[0], ids)
    # The bound rounds to exactly L values per channel, including 0 for a zero input.
    z = torch.randn(1, len(levels), 64, 64) * 10
    rounded = quantizer.bound(z).round()
    for channel, level in enumerate(levels):
        assert torch.unique(rounded[0, channel]).numel() == level
    assert torch.equal(quantizer.bound(torch.zeros(1, len(levels), 1, 1)).round(), torch.zeros(1, len(levels), 1, 1))


@pytest.mark.parametrize("side", [1, 2, 4, 5, 7, 8, 9, 16])
@pytest.mark.parametrize("geometry", ["radial", "square"])
def test_frequency_bands_partition_the_spectrum(side, geometry):
    scales = sorted({1, max(1, side // 2), side})
    masks = band_masks(side, scales, geometry=geometry)
    assert masks.shape == (len(scales), side, side)
    assert torch.equal(masks.sum(0), torch.ones(side, side))  # cover everything …
    assert set(masks.unique().tolist()) <= {0.0, 1.0}  # … with 0/1 masks, hence disjoint
    assert masks[0, side // 2, side // 2] == 1  # DC (centred by fftshift) is in the first band
    # Symmetric under (u, v) → (-u, -v) on the DFT grid, so every band of a real latent is real.
    spectrum_masks = torch.fft.ifftshift(masks, dim=(-2, -1))
    index = (-torch.arange(side)) % side
    assert torch.equal(spectrum_masks, spectrum_masks[:, index][:, :, index])

    latent = torch.randn(2, 3, side, side, dtype=torch.float64)
    bands = split_bands(latent, masks.double())
    torch.testing.assert_close(bands.sum(0), latent, atol=1e-5, rtol=0)
    complex_bands = torch.fft.ifft2(torch.fft.fft2(latent).unsqueeze(0) * spectrum_masks[:, None, None])
    assert complex_bands.imag.abs().max() < 1e-10
    # The first band carries the mean; the others have none.
    torch.testing.assert_close(bands[0].mean((-2, -1)), latent.mean((-2, -1)))
    if len(scales) > 1:
        assert bands[1:].mean((-2, -1)).abs().max() < 1e-10
    bands32 = split_bands(latent.float(), masks)
    torch.testing.assert_close(bands32.sum(0), latent.float(), atol=1e-5, rtol=0)


def test_frequency_band_edges_grow_with_token_counts():
    # σ_i = σ_{i-1} + (h_i·w_i / Σ h_j·w_j)·σ_max: the last band (most tokens) holds the most frequencies.
    masks = band_masks(16, [1, 2, 4, 8, 16], geometry="radial")
    counts = masks.sum((1, 2))
    assert counts[-1] == counts.max() and counts.sum() == 256
    radius = torch.cdist(torch.tensor([[8.0, 8.0]]), torch.cartesian_prod(torch.arange(16.0), torch.arange(16.0)))
    radius = radius.view(16, 16)
    inner = [float(radius[mask.bool()].max()) for mask in masks if mask.any()]
    assert inner == sorted(inner)  # bands are nested rings, low to high frequency


def test_config_round_trips_through_json():
    config = tiny_config("frequency", channels=3, band_geometry="square", carry_error=False)
    restored = TokenizerConfig(**json.loads(json.dumps(asdict(config))))
    assert restored == config
    first, second = build_tokenizer(config), build_tokenizer(restored)
    second.load_state_dict(first.state_dict())
    images = torch.rand(2, 3, 28, 28) * 2 - 1
    assert all(torch.equal(a, b) for a, b in zip(first.encode(images), second.encode(images)))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"kind": "nope"}, "unknown tokenizer kind"),
        ({"image_size": 30}, "not divisible"),
        ({"kind": "multiscale", "scales": [1, 2, 5]}, "last scale must equal the latent side 7"),
        ({"kind": "frequency", "scales": [1, 3, 2, 7]}, "strictly increasing"),
        ({"kind": "frequency", "band_geometry": "hexagon"}, "band_geometry"),
        ({"kind": "fsq", "fsq_levels": [8, 1]}, "fsq_levels"),
        ({"kind": "vq", "codebook_size": 1}, "codebook_size"),
        ({"reconstruction": "l3"}, "reconstruction"),
        ({"channel_mult": [1, 2]}, "channel_mult"),
        ({"channels": 0}, "channels"),
    ],
)
def test_invalid_configs_are_refused(overrides, message):
    values = asdict(tiny_config("vq"))
    values.update(overrides)
    with pytest.raises(ArgenError, match=message):
        build_tokenizer(TokenizerConfig(**values))


def test_bad_inputs_are_refused_with_one_line_errors():
    tokenizer = build_tokenizer(tiny_config("multiscale")).eval()
    ids = tokenizer.encode(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ArgenError, match="channels"):
        tokenizer.encode(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ArgenError, match="28×28"):
        tokenizer.encode(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ArgenError, match="at least 4 id grid"):
        tokenizer.decode(ids[:2])
    with pytest.raises(ArgenError, match="outside"):
        tokenizer.decode([*ids[:-1], ids[-1] + tokenizer.codebook_size])
    with pytest.raises(ArgenError, match=r"\(B, 2, 2\)"):
        tokenizer.decode([ids[0], ids[0], *ids[2:]])
    with pytest.raises(ArgenError, match="upto"):
        tokenizer.compose(ids, 5)
    # compose needs only the grids it uses: an order mid-inference has the first few
    assert tokenizer.compose(ids[:2], 2).shape == (2, 8, 7, 7)
    # single-grid tokenizers encode any size divisible by the downsampling factor
    vq = build_tokenizer(tiny_config("vq")).eval()
    assert vq.encode(torch.zeros(1, 1, 36, 20))[0].shape == (1, 9, 5)
    with pytest.raises(ArgenError, match="not divisible"):
        vq.encode(torch.zeros(1, 1, 30, 28))


# ---- metrics


@pytest.mark.parametrize("channels,size", [(1, 32), (3, 40), (3, 64)])
def test_ssim_agrees_with_torchmetrics(channels, size):
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    generator = torch.Generator().manual_seed(size)
    a = torch.rand(4, channels, size, size, generator=generator) * 2 - 1
    noisy = a + 0.3 * torch.randn(a.shape, generator=generator)
    b = torch.nn.functional.avg_pool2d(noisy, 3, stride=1, padding=1).clamp(-1, 1)
    reference = StructuralSimilarityIndexMeasure(gaussian_kernel=True, data_range=2.0)(b, a)
    assert abs(float(ssim(b, a)) - float(reference)) < 1e-4
    assert abs(float(ssim(a, a)) - 1) < 1e-6


def test_multiscale_ssim_works_at_28_and_is_differentiable():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(4, 1, 28, 28, generator=generator) * 2 - 1
    b = (a + 0.2 * torch.randn(a.shape, generator=generator)).clamp(-1, 1).requires_grad_()
    value = multiscale_ssim(b, a)
    assert 0 < float(value.detach()) < 1
    assert abs(float(multiscale_ssim(a, a)) - 1) < 1e-6
    worse = multiscale_ssim((a + 0.5 * torch.randn(a.shape, generator=generator)).clamp(-1, 1), a)
    assert float(worse) < float(value.detach())
    value.backward()
    assert torch.isfinite(b.grad).all() and b.grad.abs().sum() > 0
    with pytest.raises(ArgenError, match="too small"):
        multiscale_ssim(a, a, scales=4)


def test_psnr_and_codebook_statistics():
    a = torch.zeros(2, 1, 4, 4)
    b = a.clone()
    b[0] += 0.2  # MSE 0.04 → 10·log10(4 / 0.04) = 20 dB
    b[1] += 0.02  # MSE 0.0004 → 40 dB
    assert abs(float(psnr(a, b)) - 30.0) < 1e-4  # per image, then averaged
    uniform = codebook_statistics([torch.arange(8).view(1, 2, 4), torch.arange(8).view(1, 2, 4)], 16)
    assert uniform["usage"] == 0.5 and uniform["used"] == 8 and abs(uniform["perplexity"] - 8) < 1e-9
    assert codebook_statistics(torch.zeros(5, dtype=torch.long), 4)["perplexity"] == 1
    with pytest.raises(ArgenError):
        codebook_statistics(torch.tensor([4]), 4)


@pytest.mark.parametrize("kind", ["multiscale", "frequency"])
def test_upsampling_by_products_equals_bicubic_interpolation(kind):
    """`ResidualQuantizer.upsample` (two products with a matrix taken from F.interpolate) is bicubic interpolation,
    borders included, up to float rounding, for every grid side up to the latent's, in float32 and float64, with
    gradients."""
    import torch.nn.functional as F

    quantizer = build_tokenizer(tiny_config(kind, image_size=64, scales=[1, 2, 3, 5, 8, 16])).quantizer
    generator = torch.Generator().manual_seed(0)
    for side in range(1, 16):
        for dtype, tolerance in ((torch.float32, 2e-5), (torch.float64, 1e-12)):
            codes = torch.randn(2, 3, side, side, generator=generator, dtype=dtype)
            expected = F.interpolate(codes, size=(16, 16), mode="bicubic")
            torch.testing.assert_close(quantizer.upsample(codes), expected, rtol=0, atol=tolerance)
    codes = torch.randn(2, 3, 5, 5, generator=generator, requires_grad=True)
    weights = torch.randn(2, 3, 16, 16, generator=generator)
    (gradient,) = torch.autograd.grad((quantizer.upsample(codes) * weights).sum(), codes)
    (expected,) = torch.autograd.grad((F.interpolate(codes, size=(16, 16), mode="bicubic") * weights).sum(), codes)
    torch.testing.assert_close(gradient, expected, rtol=1e-5, atol=1e-5)
