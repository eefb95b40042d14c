"""Tokenizers: images ⇄ token ids, one ``(B, h, w)`` grid per scale or band.

Every tokenizer is a conv autoencoder (`autoencoder.Tokenizer`) with one quantizer between encoder and decoder,
one file per quantizer:

- ``vq``: nearest-code VQ with l2-normalised low-dimensional codes (LlamaGen), one grid.
- ``fsq``: finite scalar quantization, an implicit codebook of prod(levels) codes, one grid.
- ``multiscale``: VAR's multi-scale residual quantization, one grid per scale.
- ``frequency``: NFIG's FR-VAE, one grid per frequency band.

`build_tokenizer(TokenizerConfig(kind=...))` builds one and refuses a config that cannot work. A new kind is one
new file here: a `Tokenizer` subclass decorated with ``@register_tokenizer`` (see `autoencoder`); `TOKENIZERS`
discovers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from argen.tokenizers.autoencoder import TOKENIZERS, Tokenizer, register_tokenizer


@dataclass
class TokenizerConfig:
    """Everything that defines a tokenizer; plain JSON types, since it is written to ``config.json``.

    The defaults give a 28×28 → 7×7 tokenizer with 1024 codes that trains on a CPU in minutes. Recommended
    training: batch 32, learning rate 4e-3 (AdamW, 100-200 warmup steps, cosine decay). On Fashion-MNIST at 400
    steps, lr 4e-3 gave +0.4 dB test PSNR over 2e-3 and l2 +0.45 dB over l1 (vq); both together +0.85 dB (vq and
    multiscale).
    """

    kind: str = "vq"  # one of TOKENIZERS
    channels: int = 1  # 1 grayscale, 3 RGB
    image_size: int = 28
    # Autoencoder. Encoder: stem, per stage `blocks` residual blocks and a stride-2 conv; the decoder mirrors it.
    width: int = 16  # channels of the first stage (doubled per stage: 16, 32, 64 at 28, 14, 7)
    downsample: int = 2  # number of stride-2 stages: 28 -> 7
    channel_mult: list[int] | None = None  # width multipliers, stem first, length downsample + 1; None: 1, 2, 4, …
    blocks: int = 1  # residual blocks per stage
    latent_dim: int = 32  # encoder output / decoder input channels (VAR's Cvae)
    # Codebook (vq, multiscale, frequency).
    codebook_size: int = 1024
    code_dim: int = 8  # vq only: low-dimensional l2-normalised codes (LlamaGen)
    commitment: float = 0.25  # beta of the commitment term ||z - sg(q)||²
    restart_after: int = 20  # re-initialise a code unused for this many training steps; 0 turns restarts off
    # FSQ: levels per dimension, implicit codebook prod(levels) (codebook_size is ignored).
    fsq_levels: list[int] = field(default_factory=lambda: [8, 8, 4, 4])
    # Multi-grid kinds: the side of each square grid, coarse to fine; the last is the latent side.
    scales: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 7])
    quant_resi: float = 0.5  # VAR's phi: output = (1 - r)·h + r·conv(h)
    phi_count: int = 4  # VAR's share_quant_resi: 0 one phi per scale, 1 shared, k>1 partially shared
    band_allocation: str = "grid"  # frequency: "grid" (bands tied to their grids) or "paper" (FR-VAE's σ_i)
    band_geometry: str = "radial"  # frequency, paper allocation: "radial" (Euclidean) or "square" (Chebyshev) masks
    allow_empty_bands: bool = False  # frequency: accept an allocation that leaves a band without frequencies
    carry_error: bool = True  # frequency: each band also quantizes what earlier bands left unexplained
    # Loss: reconstruction + ssim_weight·(1 - MS-SSIM) + codebook terms.
    reconstruction: str = "l2"  # "l2" or "l1" (l2 optimises what PSNR measures)
    ssim_weight: float = 0.2


def build_tokenizer(config: TokenizerConfig) -> Tokenizer:
    """The tokenizer ``config.kind`` names; `ArgenError` if the kind is unknown or the config cannot work."""
    return TOKENIZERS.lookup(config.kind)(config)


def default_scales(side: int) -> list[int]:
    """Grid sides, coarse to fine, for a ``side``×``side`` latent: VAR's lists where they exist (1,2,3,4,5,7 for
    7×7; its 256-px 1,2,3,4,5,6,8,10,13,16 for 16×16), otherwise 1..4 then roughly geometric steps to ``side``."""
    known = {7: [1, 2, 3, 4, 5, 7], 8: [1, 2, 3, 4, 6, 8], 16: [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]}
    if side in known:
        return known[side]
    if side <= 5:
        return list(range(1, side + 1))
    scales, value = [1, 2, 3, 4], 4.0
    while round(value * 1.3) < side:
        value *= 1.3
        if round(value) > scales[-1]:
            scales.append(round(value))
    return [*scales, side]


def load_tokenizer(directory) -> tuple[Tokenizer, dict]:
    """A tokenizer release (``train-tokenizer --out``) → (tokenizer in eval mode, its config.json document)."""
    from argen.checkpoint import load_release, read_release_config

    overrides = {}
    values = read_release_config(directory, kind="tokenizer")["config"]
    if values.get("kind") == "frequency" and "band_allocation" not in values:
        # Written before band allocation was a choice: FR-VAE's thresholds, empty bands and all.
        overrides = {"band_allocation": "paper", "allow_empty_bands": True}
    return load_release(
        directory, kind="tokenizer", config_class=TokenizerConfig, build=build_tokenizer, overrides=overrides
    )


__all__ = [
    "TOKENIZERS",
    "Tokenizer",
    "TokenizerConfig",
    "build_tokenizer",
    "default_scales",
    "load_tokenizer",
    "register_tokenizer",
]
