"""p(image | reconstruction): the small learned model that makes `argen compress --lossless` exact.

The lossy part of the codec is the tokenizer: the token stream decodes to a reconstruction x̂ (uint8, what lossy
mode outputs). What is left, the residual x − x̂, is coded with this model, as in the hybrid scheme of "Lossless
Compression with Probabilistic Circuits" (Liu, Mandt, Van den Broeck, ICLR 2022, arXiv 2111.11632, §6), which
models p(r | x_lossy) of a lossy codec's reconstruction. Coding the pixel x given x̂ is the same thing as coding r.

Per pixel, the distribution over the 256 values is a discretized logistic mixture (PixelCNN++, Salimans et al.,
arXiv 1701.05517, §2.1), its parameters predicted by a small conv net. The means are x̂ plus a predicted offset, so
an untrained model already centres every pixel on the reconstruction.

Pixels are coded in ``stages`` passes, not all at once: with 4 stages the 2×2 polyphase components in the order
(0,0), (1,1), (0,1), (1,0), each predicted from x̂ *and the pixels of earlier stages* (a multi-pass context model
in the manner of the checkerboard context of He et al., arXiv 2103.15306, and the subimage passes of SReC, Cao et
al., arXiv 2004.02872). Residuals of neighbouring pixels are strongly correlated, and the passes let the model use
that for the cost of ``stages`` network calls per batch, where a raster context model would need one per pixel.
``stages = 1`` is the plain conditionally independent model.

A residual model is a release directory (``config.json`` + ``model.safetensors``, kind ``residual``) trained for one
tokenizer, whose fingerprint it records: ``argen train-residual --model DIR`` (`argen.train.residual.train_residual`)
writes ``DIR/residual`` by default.

Legend: B batch, C image channels, H/W image size, K mixture components, P pixels of a stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from argen.checkpoint import load_release
from argen.errors import ArgenError
from argen.tokenizers.autoencoder import ResidualBlock

RESIDUAL_KIND = "residual"
RESIDUAL_DIRECTORY = "residual"  # DIR/residual beside DIR/tokenizer and DIR/generator
# Polyphase order of the 4-stage schedule: the diagonal partner of the first component comes second, so from the
# second stage on every pixel has known neighbours on both axes.
POLYPHASE_ORDER = ((0, 0), (1, 1), (0, 1), (1, 0))
STAGE_CHOICES = (1, 2, 4)
LOG_SCALE_MIN = -7.0


@dataclass
class ResidualConfig:
    """Everything that defines a residual model; plain JSON types, since it is written to ``config.json``."""

    channels: int = 1
    image_size: int = 28
    width: int = 32  # conv channels
    blocks: int = 3  # residual blocks (two 3×3 convs each) after the stem
    mixtures: int = 5  # logistic components per pixel and channel
    stages: int = 4  # 1: all pixels at once; 2: checkerboard; 4: 2×2 polyphase components

    def __post_init__(self) -> None:
        if self.stages not in STAGE_CHOICES:
            raise ArgenError(f"residual stages must be one of {', '.join(map(str, STAGE_CHOICES))}, got {self.stages}")
        if self.channels < 1 or self.image_size < 1 or self.width < 1 or self.blocks < 0 or self.mixtures < 1:
            raise ArgenError(
                "residual model channels, image_size, width and mixtures must be at least 1 and blocks at least 0"
            )


def stage_map(height: int, width: int, stages: int) -> Tensor:
    """(H, W) long: the stage at which each pixel is coded."""
    rows = torch.arange(height).view(-1, 1).expand(height, width)
    cols = torch.arange(width).view(1, -1).expand(height, width)
    if stages == 1:
        return torch.zeros(height, width, dtype=torch.long)
    if stages == 2:
        return (rows + cols) % 2
    phase = {cell: index for index, cell in enumerate(POLYPHASE_ORDER)}
    table = torch.tensor([[phase[(0, 0)], phase[(0, 1)]], [phase[(1, 0)], phase[(1, 1)]]])
    return table[rows % 2, cols % 2]


def pixels_to_float(pixels: Tensor) -> Tensor:
    """uint8 (or integer-valued) pixels in [0, 255] → float in [-1, 1] (float64 stays float64)."""
    return (pixels if pixels.dtype == torch.float64 else pixels.float()).div(127.5).sub(1.0)


def discretized_logistic_log_probs(values: Tensor, parameters: Tensor) -> Tensor:
    """log p(value) (natural log) under a discretized logistic mixture over the 256 pixel values.

    Args:
        values: (...,) pixel values in [0, 255] (any integer or float dtype).
        parameters: (..., K, 3) per component: mixture logit, mean in [-1, 1] units, log scale; broadcast against
            ``values``.

    The end bins take the tails (value 0 everything below −1 + 1/255, value 255 everything above 1 − 1/255), so the
    probabilities of the 256 values sum to one up to the mid-point rule used for bins too small to difference in
    floating point (PixelCNN++'s ``discretized_mix_logistic_loss``).
    """
    x = pixels_to_float(values).unsqueeze(-1)  # (..., 1)
    logit, mean, log_scale = parameters.unbind(-1)  # each (..., K)
    log_scale = log_scale.clamp(min=LOG_SCALE_MIN)
    centred = x - mean
    inverse_scale = torch.exp(-log_scale)
    plus = inverse_scale * (centred + 1.0 / 255.0)
    minus = inverse_scale * (centred - 1.0 / 255.0)
    log_cdf_plus = plus - F.softplus(plus)  # log σ(plus), for value 0
    log_one_minus_cdf_minus = -F.softplus(minus)  # log(1 − σ(minus)), for value 255
    delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    middle = inverse_scale * centred
    log_pdf_middle = middle - log_scale - 2.0 * F.softplus(middle)  # log density at the bin centre
    inner = torch.where(
        delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_pdf_middle - math.log(127.5)
    )  # bin width 2/255: density × width
    log_component = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, inner))
    return torch.logsumexp(log_component + F.log_softmax(logit, dim=-1), dim=-1)


class ResidualModel(nn.Module):
    """(reconstruction, known pixels, stage) → per-pixel discretized logistic mixture parameters."""

    def __init__(self, config: ResidualConfig):
        super().__init__()
        self.config = config
        channels, width = config.channels, config.width
        # Inputs: reconstruction (C), known pixels (C, zero where unknown), the known mask (1), the stage (one-hot).
        self.stem = nn.Conv2d(2 * channels + 1 + config.stages, width, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(width, width) for _ in range(config.blocks)])
        self.head = nn.Sequential(nn.SiLU(), nn.Conv2d(width, channels * config.mixtures * 3, 1))
        # An untrained model is already a sensible code: means on the reconstruction, one moderate scale.
        nn.init.zeros_(self.head[1].weight)
        with torch.no_grad():
            bias = self.head[1].bias.view(channels, config.mixtures, 3)
            bias.zero_()
            bias[..., 2] = math.log(0.05)
        self.register_buffer("stages_of", stage_map(config.image_size, config.image_size, config.stages), False)

    def forward(self, reconstruction: Tensor, known: Tensor, stage: Tensor) -> Tensor:
        """Mixture parameters of every pixel.

        Args:
            reconstruction: uint8 (B, C, H, W), the tokenizer's reconstruction x̂.
            known: uint8 (B, C, H, W), the true pixels; only those of stages < ``stage`` are read.
            stage: (B,) long, the stage being coded in each image.

        Returns:
            (B, C, H, W, K, 3): mixture logit, mean (x̂ + offset, [-1, 1] units), log scale.
        """
        batch, channels, height, width = reconstruction.shape
        mask = (self.stages_of[None] < stage.view(-1, 1, 1)).unsqueeze(1)  # (B, 1, H, W)
        recon = pixels_to_float(reconstruction)
        visible = torch.where(mask, pixels_to_float(known), torch.zeros_like(recon))
        stage_planes = F.one_hot(stage, self.config.stages).float().view(batch, -1, 1, 1).expand(-1, -1, height, width)
        features = torch.cat([recon, visible, mask.float(), stage_planes], dim=1)
        raw = self.head(self.body(self.stem(features)))  # (B, C·K·3, H, W)
        raw = raw.view(batch, channels, self.config.mixtures, 3, height, width).permute(0, 1, 4, 5, 2, 3)
        logit, offset, log_scale = raw.unbind(-1)  # each (B, C, H, W, K)
        mean = recon.unsqueeze(-1) + offset
        return torch.stack([logit, mean, log_scale], dim=-1)

    def stage_loss(self, images: Tensor, reconstructions: Tensor, stage: Tensor) -> Tensor:
        """Mean code length in bits per subpixel of each image's ``stage`` pixels, (B,) uint8 inputs."""
        parameters = self(reconstructions, images, stage)
        log_probs = discretized_logistic_log_probs(images, parameters)  # (B, C, H, W)
        target = (self.stages_of[None] == stage.view(-1, 1, 1)).unsqueeze(1).expand_as(log_probs)
        bits = -(log_probs * target).flatten(1).sum(1) / math.log(2)
        return bits / target.flatten(1).sum(1)

    @torch.no_grad()
    def stage_log_pmf(
        self, images: Tensor, reconstructions: Tensor, stage: int, *, chunk: int = 2048, values: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """(B, C, P, 256) natural-log probabilities of every value for the P pixels of ``stage`` (row-major).

        Only the pixels of earlier stages are read from ``images``. With ``values`` (B, C, P), also returns their
        log-probabilities under the training loss's formula (`discretized_logistic_log_probs`), the model's own
        code length, which never underflows to -inf the way a float table can in the far tails.

        The coder needs the whole table, so it is computed directly as differences of the logistic CDF at the 257
        bin edges (the end bins open). float32 suffices: against a float64 table the expected extra code length is
        below 1e-7 bits per pixel (measured on random mixtures; the coder's 2^-24 floor costs more), at twice the
        speed.
        """
        batch = images.shape[0]
        parameters = self(reconstructions, images, torch.full((batch,), stage, dtype=torch.long, device=images.device))
        where = (self.stages_of == stage).flatten()
        parameters = parameters.flatten(2, 3)[:, :, where]  # (B, C, P, K, 3)
        flat = parameters.reshape(-1, self.config.mixtures, 3).float()
        edges = torch.arange(1, 256, device=images.device, dtype=torch.float32).div(127.5).sub(1.0 + 1.0 / 255.0)
        log_pmf = torch.empty(len(flat), 256, device=images.device)
        for start in range(0, len(flat), chunk):
            logit, mean, log_scale = flat[start : start + chunk].unbind(-1)  # (n, K) each
            inverse_scale = torch.exp(-log_scale.clamp(min=LOG_SCALE_MIN)).unsqueeze(-1)  # (n, K, 1)
            cdf = torch.empty(*logit.shape, 257, device=images.device)
            # (edge − mean) / scale for the 255 inner edges in one pass; the outer edges are −∞ and +∞.
            torch.addcmul(-mean.unsqueeze(-1) * inverse_scale, edges, inverse_scale, out=cdf[..., 1:256])
            cdf[..., 1:256].sigmoid_()
            cdf[..., 0], cdf[..., 256] = 0.0, 1.0
            mass = torch.diff(cdf, dim=-1).clamp_(min=0.0)  # (n, K, 256)
            pmf = (torch.softmax(logit, dim=-1).unsqueeze(-1) * mass).sum(dim=1)  # a fixed-order sum, no BLAS
            log_pmf[start : start + chunk] = torch.log(pmf)
        log_pmf = log_pmf.view(*parameters.shape[:3], 256)
        if values is None:
            return log_pmf
        return log_pmf, discretized_logistic_log_probs(values, parameters)


def load_residual(directory: str | Path) -> tuple[ResidualModel, dict]:
    """A residual release → (model in eval mode, its config.json document)."""
    return load_release(directory, kind=RESIDUAL_KIND, config_class=ResidualConfig, build=ResidualModel)


@torch.no_grad()
def residual_bits_per_dim(
    model: ResidualModel, images: Tensor, reconstructions: Tensor, batch_size: int = 256
) -> float:
    """The model's mean code length over every stage, bits per subpixel, on uint8 (N, C, H, W) images."""
    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(images), batch_size):
        batch, recon = images[start : start + batch_size], reconstructions[start : start + batch_size]
        for stage in range(model.config.stages):
            stages = torch.full((len(batch),), stage, dtype=torch.long)
            parameters = model(recon, batch, stages)
            log_probs = discretized_logistic_log_probs(batch, parameters)
            target = (model.stages_of == stage).expand_as(log_probs)
            total += float(-(log_probs * target).sum()) / math.log(2)
        count += batch.numel()
    return total / count


__all__ = [
    "RESIDUAL_DIRECTORY",
    "RESIDUAL_KIND",
    "ResidualConfig",
    "ResidualModel",
    "discretized_logistic_log_probs",
    "load_residual",
    "residual_bits_per_dim",
    "stage_map",
]
