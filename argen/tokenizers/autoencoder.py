"""The conv autoencoder every tokenizer shares, and `Tokenizer`: encoder → quantizer → decoder.

Encoder and decoder follow the VQGAN/LlamaGen layout at CPU size: residual blocks (GroupNorm, SiLU, 3×3 conv),
one stride-2 conv per downsampling stage, a GroupNorm-SiLU-conv head. GroupNorm rather than BatchNorm so that a
token never depends on the other images in the batch and DDP needs no synchronised statistics.

A quantizer (one file each: vq, fsq, multiscale, frequency) turns the latent (B, D, h, w) into one or more id
grids and back. `Tokenizer` owns the public contract:

- ``encode(images) -> list[LongTensor]``, one (B, h_i, w_i) grid per scale or band;
- ``decode(ids) -> images``, exactly ``decoder(compose(ids, len(ids)))``;
- ``embed(ids)``: the code vectors of each grid, (B, D_code, h_i, w_i);
- ``compose(ids, upto)``: the latent (B, D, h, w) rebuilt from the first ``upto`` grids (the input of the
  next-scale and next-frequency orders);
- ``codes_to_ids(codes)``: the inverse of ``embed`` (quantizing a code vector again gives its id);
- ``forward(images) -> (reconstruction, losses, stats)`` and ``training_loss(images) -> (loss, logs)``.

Shapes: B batch, C image channels, H/W image size, D latent channels, h/w grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from argen.errors import ArgenError
from argen.onednn import Conv2d
from argen.registry import DEFAULT_RANK, Registry
from argen.tokenizers.losses import codebook_statistics, multiscale_ssim, psnr

if TYPE_CHECKING:
    from argen.tokenizers import TokenizerConfig

# MS-SSIM loss geometry: up to 3 dyadic scales with a 7-pixel window, as many scales as the image allows.
SSIM_WINDOW = 7
SSIM_MAX_SCALES = 3


def _groups(channels: int) -> int:
    """GroupNorm groups: as many as possible up to 32 with at least 4 channels each."""
    return next((g for g in (32, 16, 8, 4, 2) if channels % g == 0 and channels // g >= 4), 1)


class ResidualBlock(nn.Module):
    """x → x' + conv(SiLU(GN(conv(SiLU(GN(x)))))), with a 1×1 skip projection when the width changes."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(inputs), inputs)
        self.conv1 = Conv2d(inputs, outputs, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(outputs), outputs)
        self.conv2 = Conv2d(outputs, outputs, 3, padding=1)
        self.skip = Conv2d(inputs, outputs, 1) if inputs != outputs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def stage_widths(config: TokenizerConfig) -> list[int]:
    """Channels of the stem and of each stage's output, length ``downsample + 1``."""
    # Doubling per stage keeps the cost of a conv the same at every resolution (H·W·C² stays constant).
    default = [2**stage for stage in range(config.downsample + 1)]
    multipliers = config.channel_mult if config.channel_mult is not None else default
    return [config.width * multiplier for multiplier in multipliers]


class Encoder(nn.Module):
    """images (B, C, H, W) → latent (B, latent_dim, H / 2^downsample, W / 2^downsample)."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        widths = stage_widths(config)
        self.stem = Conv2d(config.channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        for stage in range(config.downsample):
            layers += [ResidualBlock(widths[stage], widths[stage]) for _ in range(config.blocks)]
            layers.append(Conv2d(widths[stage], widths[stage + 1], 3, stride=2, padding=1))
        layers += [ResidualBlock(widths[-1], widths[-1]) for _ in range(config.blocks)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.GroupNorm(_groups(widths[-1]), widths[-1]),
            nn.SiLU(),
            Conv2d(widths[-1], config.latent_dim, 3, padding=1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(images)))


class Decoder(nn.Module):
    """latent (B, latent_dim, h, w) → images (B, C, h·2^downsample, w·2^downsample), not clamped.

    One more group of residual blocks than the encoder, at full resolution (as in VQGAN, whose decoder has an
    extra block per level): reconstruction is the harder direction.
    """

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        widths = stage_widths(config)
        self.stem = Conv2d(config.latent_dim, widths[-1], 3, padding=1)
        layers: list[nn.Module] = [ResidualBlock(widths[-1], widths[-1]) for _ in range(config.blocks)]
        for stage in reversed(range(config.downsample)):
            layers += [ResidualBlock(widths[stage + 1], widths[stage + 1]) for _ in range(config.blocks)]
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                Conv2d(widths[stage + 1], widths[stage], 3, padding=1),
            ]
        layers += [ResidualBlock(widths[0], widths[0]) for _ in range(config.blocks)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.GroupNorm(_groups(widths[0]), widths[0]), nn.SiLU(), Conv2d(widths[0], config.channels, 3, padding=1)
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(latent)))


class Quantization(NamedTuple):
    """What a quantizer returns for a latent (B, D, h, w)."""

    quantized: torch.Tensor  # (B, D, h, w): value of compose(ids, all), gradient straight through to the latent
    ids: list[torch.Tensor]  # one (B, h_i, w_i) grid per scale or band
    losses: dict[str, torch.Tensor]  # weighted codebook terms; the tokenizer's loss adds them up
    stats: dict[str, float]  # e.g. restarted codes


class Quantizer(nn.Module):
    """The part a quantizer file implements. ``update=True`` (training steps only) allows side effects such as
    dead-code restarts; encoding never changes the codebook."""

    codebook_size: int
    embed_dim: int  # channels of the code vectors `embed` returns
    grid_shapes: list[tuple[int, int]]

    def forward(self, latent: torch.Tensor, *, update: bool = False) -> Quantization:
        raise NotImplementedError

    def embed(self, ids: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def compose(self, ids: list[torch.Tensor], upto: int) -> torch.Tensor:
        raise NotImplementedError

    def compose_step(self, latent: torch.Tensor, ids: list[torch.Tensor], step: int) -> torch.Tensor:
        """compose(ids, step + 1) given ``latent`` = compose(ids, step); residual quantizers add grid ``step``'s
        share to the running latent (VAR's f_hat) instead of recomposing every grid, with the same arithmetic."""
        return self.compose(ids, step + 1)

    def codes_to_ids(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError


def check_config(config: TokenizerConfig) -> None:
    """Refuse an autoencoder config that cannot work, with a one-line `ArgenError` saying what to change."""
    if config.channels < 1:
        raise ArgenError(f"channels must be at least 1 (1 grayscale, 3 RGB), got {config.channels}")
    if config.downsample < 0 or config.width < 1 or config.blocks < 0 or config.latent_dim < 1:
        raise ArgenError(
            f"downsample ({config.downsample}) and blocks ({config.blocks}) must be >= 0, width ({config.width}) "
            f"and latent_dim ({config.latent_dim}) >= 1"
        )
    factor = 2**config.downsample
    if config.image_size < factor or config.image_size % factor:
        raise ArgenError(
            f"image_size {config.image_size} is not divisible by 2^downsample = {factor}: choose an image size that "
            f"is a multiple of {factor} or a smaller downsample"
        )
    if config.channel_mult is not None and (
        len(config.channel_mult) != config.downsample + 1 or min(config.channel_mult) < 1
    ):
        raise ArgenError(
            f"channel_mult needs downsample + 1 = {config.downsample + 1} positive entries, got {config.channel_mult}"
        )
    if config.reconstruction not in ("l1", "l2"):
        raise ArgenError(f"reconstruction must be 'l1' or 'l2', got {config.reconstruction!r}")
    if config.ssim_weight < 0 or config.commitment < 0 or config.restart_after < 0:
        raise ArgenError("ssim_weight, commitment and restart_after must be >= 0")


class Tokenizer(nn.Module):
    """encoder → quantizer → decoder. Subclasses only build their quantizer in `make_quantizer`, and register
    with ``@register_tokenizer``.

    Images are (B, C, H, W) floats in [-1, 1]; ids travel as ``list[LongTensor]``, one (B, h_i, w_i) per grid.

    Class attributes, the kind's metadata: ``kind`` (``TokenizerConfig.kind``, ``--tokenizer KIND``), ``method``,
    ``paper``, ``arxiv`` (what it is and where it comes from) and ``rank`` (its place in listings).
    """

    kind: ClassVar[str] = ""
    method: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    arxiv: ClassVar[str] = ""
    rank: ClassVar[int] = DEFAULT_RANK

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        check_config(config)
        self.config = config
        self.latent_side = config.image_size // 2**config.downsample
        self.encoder = self.make_encoder(config)
        self.decoder = self.make_decoder(config)
        self.quantizer = self.make_quantizer(config)

    def make_quantizer(self, config: TokenizerConfig) -> Quantizer:
        raise NotImplementedError

    def make_encoder(self, config: TokenizerConfig) -> nn.Module:
        """The encoder network; ported tokenizers (var_vqvae, llamagen_vq) build their published layout here."""
        return Encoder(config)

    def make_decoder(self, config: TokenizerConfig) -> nn.Module:
        return Decoder(config)

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def grid_shapes(self) -> list[tuple[int, int]]:
        return list(self.quantizer.grid_shapes)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    # ---- checks: bad input gets a one-line error instead of a shape mismatch deep inside a conv

    def _check_images(self, images: torch.Tensor) -> None:
        factor = 2**self.config.downsample
        if images.dim() != 4 or images.shape[1] != self.config.channels:
            raise ArgenError(
                f"expected images (B, {self.config.channels}, H, W), got shape {tuple(images.shape)}; "
                "check the tokenizer's channels"
            )
        height, width = images.shape[-2:]
        if height % factor or width % factor:
            raise ArgenError(f"image size {height}×{width} is not divisible by 2^downsample = {factor}")
        if len(self.grid_shapes) > 1 and (height, width) != (self.config.image_size,) * 2:
            raise ArgenError(
                f"this {self.config.kind} tokenizer works on {self.config.image_size}×{self.config.image_size} "
                f"images (its scales are fixed), got {height}×{width}"
            )

    def _check_ids(self, ids: list[torch.Tensor], count: int) -> None:
        if not isinstance(ids, (list, tuple)) or len(ids) < count:
            raise ArgenError(
                f"expected a list of at least {count} id grid(s) (B, h, w), got "
                f"{len(ids) if isinstance(ids, (list, tuple)) else type(ids).__name__}"
            )
        single = len(self.grid_shapes) == 1
        for index, grid in enumerate(ids[:count]):
            if (
                grid.dim() != 3
                or grid.dtype.is_floating_point
                or (not single and tuple(grid.shape[1:]) != self.grid_shapes[index])
            ):
                expected = "(B, h, w)" if single else f"(B, {self.grid_shapes[index][0]}, {self.grid_shapes[index][1]})"
                raise ArgenError(
                    f"id grid {index} should be an integer tensor {expected}, got {grid.dtype} {tuple(grid.shape)}"
                )
            if grid.numel() and (grid.min() < 0 or grid.max() >= self.codebook_size):
                raise ArgenError(
                    f"id grid {index} holds ids {int(grid.min())}..{int(grid.max())} outside [0, {self.codebook_size})"
                )

    # ---- the contract

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, C, H, W) → one (B, h_i, w_i) LongTensor per grid."""
        self._check_images(images)
        return self.quantizer(self.encoder(images), update=False).ids

    def decode(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """ids (one (B, h_i, w_i) per grid) → images (B, C, H, W), unclamped: ``decoder(compose(ids, all))``."""
        self._check_ids(ids, len(self.grid_shapes))
        return self.decoder(self.quantizer.compose(list(ids), len(self.grid_shapes)))

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """A latent (B, D, h, w), e.g. ``compose(ids, s)`` for a coarse preview, → images (B, C, H, W)."""
        return self.decoder(latent)

    def embed(self, ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """ids → the code vector of every token, one (B, D_code, h_i, w_i) per grid."""
        self._check_ids(ids, len(ids))
        return self.quantizer.embed(list(ids))

    def codes_to_ids(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Code vectors (B, D_code, h_i, w_i) per grid → ids; the inverse of `embed`."""
        return self.quantizer.codes_to_ids(list(codes))

    def compose(self, ids: list[torch.Tensor], upto: int) -> torch.Tensor:
        """The latent (B, D, h, w) rebuilt from the first ``upto`` grids of ``ids``; zeros for ``upto = 0``."""
        if not 0 <= upto <= len(self.grid_shapes):
            raise ArgenError(f"upto must lie in [0, {len(self.grid_shapes)}], got {upto}")
        self._check_ids(ids, max(upto, 1))
        return self.quantizer.compose(list(ids), upto)

    def compose_step(self, latent: torch.Tensor, ids: list[torch.Tensor], step: int) -> torch.Tensor:
        """``compose(ids, step + 1)`` from ``latent`` = ``compose(ids, step)``, equal to it bit for bit: the samplers'
        running latent, one grid added per step. Unchecked (the samplers' ids are valid by construction)."""
        return self.quantizer.compose_step(latent, list(ids), step)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
        """images → (reconstruction (B, C, H, W), weighted loss terms, stats).

        The loss terms are already weighted, so ``sum(losses.values())`` is the training loss: a DDP trainer calls
        the wrapped module (which runs this forward) and sums, instead of reaching for `training_loss`. In training
        mode the quantizer may restart dead codes.
        """
        self._check_images(images)
        quantization = self.quantizer(self.encoder(images), update=self.training)
        reconstruction = self.decoder(quantization.quantized)
        difference = reconstruction - images
        losses = {
            "reconstruction": difference.abs().mean()
            if self.config.reconstruction == "l1"
            else difference.square().mean()
        }
        scales = _ssim_scales(min(images.shape[-2:]))
        if self.config.ssim_weight > 0 and scales:
            similarity = multiscale_ssim(reconstruction, images, scales=scales, window=SSIM_WINDOW)
            losses["ssim"] = self.config.ssim_weight * (1 - similarity)
        losses.update(quantization.losses)
        with torch.no_grad():
            stats = {
                "psnr": float(psnr(reconstruction.detach().clamp(-1, 1), images)),
                "usage": codebook_statistics(quantization.ids, self.codebook_size)["usage"],
                **quantization.stats,
            }
        return reconstruction, losses, stats

    def training_loss(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """images → (scalar loss, logs): the loss terms, ``psnr`` (dB), ``usage`` (fraction of codes in the batch)."""
        _, losses, stats = self(images)
        return self.combine(losses, stats)

    @staticmethod
    def combine(losses: dict[str, torch.Tensor], stats: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
        """`forward`'s loss terms and stats → (scalar loss, logs), for trainers that call a DDP-wrapped module."""
        loss = torch.stack(list(losses.values())).sum()
        return loss, {**{name: float(value.detach()) for name, value in losses.items()}, **stats}

    def codebook_statistics(self, ids: list[torch.Tensor]) -> dict[str, float]:
        """Usage fraction, used count and perplexity of the codes in ``ids``."""
        return codebook_statistics(ids, self.codebook_size)


def _ssim_scales(side: int) -> int:
    """How many MS-SSIM scales an image of this side supports with the 7-pixel window (0: none)."""
    return max(
        (scales for scales in range(1, SSIM_MAX_SCALES + 1) if side // 2 ** (scales - 1) >= SSIM_WINDOW), default=0
    )


TOKENIZERS: Registry[type[Tokenizer]] = Registry("tokenizer kind", "argen.tokenizers")


def register_tokenizer(tokenizer: type[Tokenizer]) -> type[Tokenizer]:
    """Class decorator: make ``tokenizer`` buildable as ``TokenizerConfig(kind=tokenizer.kind)`` everywhere."""
    return TOKENIZERS.add(tokenizer.kind, tokenizer, rank=tokenizer.rank)
