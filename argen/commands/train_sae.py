"""`argen train-sae`: a sparse autoencoder on captured activations (TopK + AuxK, or ReLU + L1)."""

from __future__ import annotations

import argparse

from argen.commands.arguments import add_training_arguments, training_config

NAME = "train-sae"
HELP = "train a sparse autoencoder on captured activations; writes SAE/metrics.json (l0, fvu, dead, delta_loss)"
DESCRIPTION = (
    "Train a TopK (Gao et al., with AuxK) or ReLU + L1 sparse autoencoder on the activations of one hook point, then "
    "measure L0, FVU and dead latents on held-out sequences and the generator's next-token loss increase with the "
    "reconstruction spliced in. Rerun to resume."
)
ORDER = 111


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--activations", required=True, help="directory written by `argen activations`")
    parser.add_argument("--hook", required=True, help="which captured hook point")
    parser.add_argument("--kind", choices=("topk", "relu"), default="topk")
    parser.add_argument("--latents", type=int, required=True, help="dictionary size M")
    parser.add_argument("--k", type=int, default=32, help="TopK: active latents per position")
    parser.add_argument("--l1-coefficient", type=float, default=1e-3, help="ReLU: weight of the L1 penalty")
    parser.add_argument("--auxk-coefficient", type=float, default=1 / 32, help="TopK: weight of AuxK (0: off)")
    parser.add_argument("--dead-tokens", type=int, default=100_000, help="positions without firing = dead")
    parser.add_argument("--held-out", type=float, default=0.1, help="share of sequences kept for the metrics")
    parser.add_argument("--model", help="model directory for delta_loss (default: the one the activations name)")
    add_training_arguments(parser, batch_size=1024, learning_rate=1e-3, warmup_steps=20, ema_decay=0.0)


def run(arguments: argparse.Namespace) -> None:
    from argen.interpret.training import train_and_measure

    settings = {
        "kind": arguments.kind, "latents": arguments.latents, "k": arguments.k,
        "l1_coefficient": arguments.l1_coefficient, "auxk_coefficient": arguments.auxk_coefficient,
        "dead_tokens": arguments.dead_tokens, "hook": arguments.hook,
    }  # fmt: skip
    metrics = train_and_measure(
        arguments.activations,
        settings=settings,
        training=training_config(arguments),
        model=arguments.model,
        held_out=arguments.held_out,
    )
    print(" ".join(f"{name}={value:.4g}" for name, value in metrics.items() if isinstance(value, float)))
