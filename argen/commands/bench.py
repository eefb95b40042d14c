"""`argen bench`: every order trained and measured on equal terms."""

from __future__ import annotations

import argparse

from argen.commands.arguments import NUM_HELP, add_data_arguments, add_preset_argument

NAME = "bench"
HELP = "train every order at one size and budget, evaluate them, write tables, a plot and sample grids"
DESCRIPTION = (
    "Train (or reuse) the tokenizers (each order's default tokenizer kind: {tokenizers}), "
    "the classifier if none is given or shipped, and one generator per order with one shared recipe and budget; "
    "score --num samples of each and the real test split (the floor row); write OUT/results.json, OUT/results.md, "
    "OUT/quality-speed.png and OUT/samples-ORDER.png, OUT/progress-ORDER.gif. Training takes about (tokenizer "
    "kinds + orders) × the budget. Rerunning resumes and reuses measurements whose settings did not change."
)
ORDER = 90


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from argen.orders import ORDERS, default_tokenizers

    parser.description = DESCRIPTION.format(
        tokenizers=", ".join(f"{kind} for {order}" for order, kind in default_tokenizers().items())
    )
    add_data_arguments(parser)
    parser.add_argument("--out", help="benchmark folder (default: runs/bench/DATA)")
    parser.add_argument(
        "--orders",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        default=list(ORDERS),
        help=f"comma-separated orders to compare (default: {','.join(ORDERS)})",
    )
    parser.add_argument("--minutes", type=float, help="training minutes per generator (summed over resumes)")
    parser.add_argument("--steps", type=int, help="training steps per generator (the first budget reached wins)")
    parser.add_argument("--tokenizer-minutes", type=float, help="minutes per tokenizer (default: the generator budget)")
    parser.add_argument("--tokenizer-steps", type=int, help="steps per tokenizer (default: the generator budget)")
    parser.add_argument(
        "--evaluate-only", action="store_true", help="train nothing: measure the model directories already in --out"
    )
    add_preset_argument(parser, default="1m")
    parser.add_argument("--num", type=int, default=10000, help=f"{NUM_HELP}: generated and scored per order")
    parser.add_argument(
        "--classifier", help="feature network (default: the shipped one for --data, else one trained in OUT/classifier)"
    )
    parser.add_argument("--classifier-steps", type=int, default=1000, help="steps when the classifier is trained here")
    parser.add_argument("--cfg-scale", type=float, default=2.0, help="classifier-free guidance for every order")
    parser.add_argument(
        "--per-label", "--per-class", dest="per_class", type=int, default=8, metavar="N",
        help="samples per class in each grid",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    recipe = parser.add_argument_group("recipe (shared by every order and tokenizer)")
    recipe.add_argument("--batch-size", type=int, default=64, help="generator batch size (tokenizers use 32)")
    recipe.add_argument("--learning-rate", type=float, default=2e-3, help="generator learning rate (tokenizers 2e-3)")
    recipe.add_argument("--warmup-steps", type=int, default=200, help="learning-rate warmup of every training")
    recipe.add_argument("--tokenizer-width", type=int, default=16, help="channels of the tokenizers' first stage")
    recipe.add_argument("--latent-dim", type=int, default=32, help="latent channels of the tokenizers")
    recipe.add_argument("--codebook-size", type=int, default=1024, help="codes per tokenizer")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(arguments: argparse.Namespace) -> None:
    import shlex

    from argen.apps.bench import BenchmarkConfig, run_benchmark
    from argen.apps.bench_report import results_table

    config = BenchmarkConfig(
        arguments.data, out=arguments.out, minutes=arguments.minutes, steps=arguments.steps,
        tokenizer_minutes=arguments.tokenizer_minutes, tokenizer_steps=arguments.tokenizer_steps,
        preset=arguments.preset, orders=arguments.orders, num_images=arguments.num, classifier=arguments.classifier,
        classifier_steps=arguments.classifier_steps, cfg_scale=arguments.cfg_scale,
        evaluate_only=arguments.evaluate_only, data_dir=arguments.data_dir, image_size=arguments.image_size,
        channels=arguments.channels, batch_size=arguments.batch_size, learning_rate=arguments.learning_rate,
        warmup_steps=arguments.warmup_steps, tokenizer_width=arguments.tokenizer_width,
        latent_dim=arguments.latent_dim, codebook_size=arguments.codebook_size, per_class=arguments.per_class,
        seed=arguments.seed, device=arguments.device, command=shlex.join(["argen", *arguments.argv]),
        progress=not arguments.no_progress,
    )  # fmt: skip
    results = run_benchmark(config)
    out = config.out
    print(results_table(results))
    print(f"results: {out / 'results.json'}, {out / 'results.md'}, {out / 'quality-speed.png'}, {out}/samples-*.png")
