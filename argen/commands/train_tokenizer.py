"""`argen train-tokenizer`: a conv autoencoder with one of the registered quantizers."""

from __future__ import annotations

import argparse

from argen.commands.arguments import (
    add_data_arguments,
    add_training_arguments,
    integer_list,
    show_defaults,
    training_config,
)

NAME = "train-tokenizer"
HELP = "train an image tokenizer: a conv autoencoder with one of the registered quantizers"
DESCRIPTION = "Train a conv autoencoder with a quantizer; the run directory becomes a tokenizer release."
ORDER = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from argen.tokenizers import TOKENIZERS, TokenizerConfig

    add_data_arguments(parser)
    kinds = ", ".join(f"{kind} ({tokenizer.method}, {tokenizer.paper})" for kind, tokenizer in TOKENIZERS.items())
    parser.add_argument("--tokenizer", required=True, choices=list(TOKENIZERS), help=f"quantizer: {kinds}")
    defaults = TokenizerConfig()  # the CLI's defaults are the library's, so the two never drift apart
    parser.add_argument(
        "--codebook-size", type=int, default=defaults.codebook_size, help="K codes (vq, multiscale, frequency)"
    )
    parser.add_argument("--width", type=int, default=defaults.width, help="channels of the first conv stage")
    parser.add_argument(
        "--downsample", type=int, default=defaults.downsample, help="stride-2 stages: 28×28 → 7×7 with 2"
    )
    parser.add_argument("--latent-dim", type=int, default=defaults.latent_dim, help="latent channels")
    parser.add_argument(
        "--code-dim", type=int, default=defaults.code_dim, help="vq: dimension of the l2-normalised codes"
    )
    parser.add_argument("--fsq-levels", type=integer_list, help="fsq: levels per dimension, e.g. 8,8,4,4")
    parser.add_argument(
        "--scales", type=integer_list, help="multiscale/frequency: grid sides, coarse to fine (default from the size)"
    )
    parser.add_argument(
        "--band-allocation",
        choices=("grid", "paper"),
        default=defaults.band_allocation,
        help="frequency: which latent frequencies each band holds: grid (default; band i holds frequencies its grid "
        "can represent, no band empty) or paper (FR-VAE's thresholds, which leave early bands empty on small latents)",
    )
    parser.add_argument(
        "--band-geometry", choices=("radial", "square"), default="radial", help="frequency, paper allocation: masks"
    )
    parser.add_argument(
        "--allow-empty-bands", action="store_true", help="frequency: train even if a band holds no frequency"
    )
    parser.add_argument(
        "--no-carry-error", action="store_true", help="frequency: do not carry a band's quantization error onward"
    )
    parser.add_argument("--reconstruction", choices=("l1", "l2"), default=defaults.reconstruction)
    parser.add_argument(
        "--ssim-weight", type=float, default=defaults.ssim_weight, help="weight of the (1 - MS-SSIM) loss term"
    )
    add_training_arguments(parser, batch_size=32, learning_rate=2e-3, warmup_steps=200, ema_decay=0.0)

    show_defaults(parser)


def run(arguments: argparse.Namespace) -> None:
    from argen.tokenizers import TokenizerConfig
    from argen.train import train_tokenizer

    defaults = TokenizerConfig()
    config = TokenizerConfig(
        kind=arguments.tokenizer,
        width=arguments.width,
        downsample=arguments.downsample,
        latent_dim=arguments.latent_dim,
        codebook_size=arguments.codebook_size,
        code_dim=arguments.code_dim,
        fsq_levels=arguments.fsq_levels or defaults.fsq_levels,
        band_allocation=arguments.band_allocation,
        band_geometry=arguments.band_geometry,
        allow_empty_bands=arguments.allow_empty_bands,
        carry_error=not arguments.no_carry_error,
        ssim_weight=arguments.ssim_weight,
        reconstruction=arguments.reconstruction,
    )
    train_tokenizer(
        arguments.data,
        tokenizer=config,
        training=training_config(arguments),
        data_dir=arguments.data_dir,
        image_size=arguments.image_size,
        channels=arguments.channels,
        scales=arguments.scales,
    )
