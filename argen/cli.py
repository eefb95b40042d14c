"""The ``argen`` command: argparse subcommands, each a thin wrapper over one library function.

Errors a user can fix (`ArgenError`) print as one line, ``argen: error: ...``; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from argen import __version__
from argen.errors import ArgenError


def add_data_arguments(parser: argparse.ArgumentParser, *, shape: bool = True) -> None:
    """--data and where to find it; ``shape`` adds --image-size/--channels (not for commands whose model fixes them)."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        required=True,
        help="image source: fashion-mnist, mnist, or folder:PATH (PNG/JPEG/WebP/BMP, one subfolder per class)",
    )
    group.add_argument(
        "--data-dir", help="folder holding the IDX files (default: $ARGEN_DATA, ~/.cache/argen, Debian's package)"
    )
    if shape:
        group.add_argument(
            "--image-size", type=int, help="resize + centre-crop to this side (default: native, 32 for folders)"
        )
        group.add_argument(
            "--channels", type=int, choices=(1, 3), help="1 grayscale or 3 RGB (default: native, 3 for folders)"
        )
    group.add_argument("--verbose", action="store_true", help="list every skipped file")


def add_training_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """The budget, optimizer and checkpoint flags every trainer shares (see `argen.train.TrainingConfig`)."""
    group = parser.add_argument_group("training")
    group.add_argument("--out", required=True, help="run directory; rerunning on it resumes (see --fresh)")
    group.add_argument("--steps", type=int, help="stop after this many optimizer steps")
    group.add_argument("--epochs", type=float, help="stop after this many passes over the data")
    group.add_argument("--minutes", type=float, help="stop after this many minutes of training (summed over resumes)")
    group.add_argument("--batch-size", type=int, default=defaults.get("batch_size", 128), help="global batch size")
    group.add_argument("--learning-rate", type=float, default=defaults.get("learning_rate", 1e-3))
    group.add_argument("--weight-decay", type=float, default=defaults.get("weight_decay", 0.0))
    group.add_argument("--warmup-steps", type=int, default=defaults.get("warmup_steps", 100))
    group.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0 disables clipping)")
    group.add_argument("--ema-decay", type=float, default=defaults.get("ema_decay", 0.999), help="0 disables EMA")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps")
    group.add_argument("--log-every", type=int, default=20, help="append to metrics.jsonl every N steps")
    group.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    group.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out and start over")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def training_config(arguments: argparse.Namespace):
    from argen.train import TrainingConfig

    return TrainingConfig(
        out=arguments.out,
        steps=arguments.steps,
        epochs=arguments.epochs,
        minutes=arguments.minutes,
        batch_size=arguments.batch_size,
        learning_rate=arguments.learning_rate,
        weight_decay=arguments.weight_decay,
        warmup_steps=arguments.warmup_steps,
        grad_clip=arguments.grad_clip,
        ema_decay=arguments.ema_decay,
        seed=arguments.seed,
        save_every=arguments.save_every,
        log_every=arguments.log_every,
        device=arguments.device,
        fresh=arguments.fresh,
        progress=not arguments.no_progress,
    )


# ----------------------------------------------------------------------------------------------------------------
# Subcommands


def command_data_info(arguments: argparse.Namespace) -> None:
    from argen.data import find_idx_files, image_grid, load_dataset

    for split in ("train", "test"):
        start = time.perf_counter()
        dataset = load_dataset(
            arguments.data,
            split=split,
            data_dir=arguments.data_dir,
            image_size=arguments.image_size,
            channels=arguments.channels,
            verbose=arguments.verbose,
        )
        seconds = time.perf_counter() - start
        channels, height, width = dataset.image_shape
        print(f"{arguments.data} [{split}]: {len(dataset)} images, {channels}×{height}×{width} uint8")
        print(f"  loaded in {seconds:.2f} s ({len(dataset) / max(seconds, 1e-9):.0f} images/s)")
        if dataset.labels is None:
            print("  unlabelled")
        else:
            counts = dataset.labels.bincount(minlength=dataset.num_classes).tolist()
            listed = ", ".join(f"{name} ({count})" for name, count in zip(dataset.classes, counts))
            print(f"  {dataset.num_classes} classes: {listed}")
        print(f"  skipped files: {len(dataset.skipped)}")
        if split == "train" and arguments.grid:
            image_grid(dataset.images[: arguments.grid_count]).save(arguments.grid)
            print(f"  wrote a grid of the first {min(arguments.grid_count, len(dataset))} images to {arguments.grid}")
    if not arguments.data.startswith("folder:"):
        print(f"IDX files: {find_idx_files(arguments.data, arguments.data_dir)}")


def command_train_classifier(arguments: argparse.Namespace) -> None:
    from argen.classifier import train_classifier

    train_classifier(
        arguments.data,
        training=training_config(arguments),
        data_dir=arguments.data_dir,
        image_size=arguments.image_size,
        channels=arguments.channels,
        width=arguments.width,
        shift=arguments.shift,
        flip=arguments.flip,
        dropout=arguments.dropout,
    )


def integer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,3, got {text!r}") from None


def command_train_tokenizer(arguments: argparse.Namespace) -> None:
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


def command_eval_tokenizer(arguments: argparse.Namespace) -> None:
    from argen.evaluate import evaluate_tokenizer

    image_path = arguments.image or f"{arguments.tokenizer.rstrip('/')}/reconstructions-{arguments.split}.png"
    results = evaluate_tokenizer(
        arguments.tokenizer,
        arguments.data,
        split=arguments.split,
        data_dir=arguments.data_dir,
        limit=arguments.limit,
        json_path=arguments.json,
        image_path=image_path,
        progress=not arguments.no_progress,
    )
    print_results(results)
    print(f"originals above reconstructions: {image_path}")


def print_results(results: dict) -> None:
    """A two-column table of a results dict (nested dicts flattened as parent.child)."""
    rows = []
    for name, value in results.items():
        if isinstance(value, dict):
            rows += [(f"{name}.{key}", inner) for key, inner in value.items()]
        else:
            rows.append((name, value))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")


def command_eval(arguments: argparse.Namespace) -> None:
    from argen.checkpoint import shipped_checkpoint
    from argen.evaluate import evaluate_generator

    classifier = arguments.classifier or shipped_checkpoint(arguments.data, "classifier")
    if classifier is None:
        raise ArgenError(
            f"no classifier for {arguments.data}: train one with `argen train-classifier --data {arguments.data} "
            "--out DIR` and pass --classifier DIR"
        )
    sampling = {}
    if arguments.model is not None:
        sampling = dict(
            cfg_scale=arguments.cfg_scale, cfg_schedule=arguments.cfg_schedule, temperature=arguments.temperature,
            top_k=arguments.top_k, top_p=arguments.top_p, **sampler_options(arguments),
        )  # fmt: skip
    results = evaluate_generator(
        classifier=classifier,
        data=arguments.data,
        model=arguments.model,
        samples=arguments.samples,
        real=arguments.real,
        num_images=arguments.num,
        reference_split=arguments.reference_split,
        data_dir=arguments.data_dir,
        batch_size=arguments.batch_size,
        seed=arguments.seed,
        device=arguments.device,
        json_path=arguments.json,
        npz_path=arguments.save_npz,
        inception_weights=arguments.inception_weights,
        progress=not arguments.no_progress,
        **sampling,
    )
    print_results(results)
    for path, what in ((arguments.json, "JSON"), (arguments.save_npz, "npz")):
        if path:
            print(f"{what}: {path}")


def command_bench(arguments: argparse.Namespace) -> None:
    import shlex

    from argen.benchmark import default_out, results_table, run_benchmark

    out = Path(arguments.out or default_out(arguments.data))
    results = run_benchmark(
        arguments.data, out=out, minutes=arguments.minutes, steps=arguments.steps,
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
    print(results_table(results))
    print(f"results: {out / 'results.json'}, {out / 'results.md'}, {out / 'quality-speed.png'}, {out}/samples-*.png")


def command_demo(arguments: argparse.Namespace) -> None:
    from argen.demo import run_demo

    summary = run_demo(
        checkpoints=arguments.checkpoints, data=arguments.data, out=arguments.out, per_class=arguments.num,
        seed=arguments.seed, cfg_scale=arguments.cfg_scale, progress=not arguments.no_progress,
    )  # fmt: skip
    for row in summary["orders"]:
        print(f"{row['order']:<10} {row['steps']:>3} forward passes/image  {row['images_per_second']:7.1f} images/s")
    print(f"open {Path(arguments.out) / 'index.html'} in a browser (made in {summary['seconds']:.1f} s)")


def command_export(arguments: argparse.Namespace) -> None:
    import torch

    from argen.checkpoint import CONFIG_NAME, export_release
    from argen.pipeline import export_model

    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": None}[arguments.dtype]
    source = Path(arguments.model)
    if (source / "generator" / CONFIG_NAME).is_file():
        export_model(source, arguments.out, dtype=dtype)
    elif (source / CONFIG_NAME).is_file():
        export_release(source, arguments.out, dtype=dtype)
    else:
        raise ArgenError(f"{source} is neither a model directory (generator/ + tokenizer/) nor a release (config.json)")
    size = sum(path.stat().st_size for path in Path(arguments.out).rglob("*") if path.is_file())
    print(f"exported {source} to {arguments.out} ({size / 1e6:.2f} MB, {arguments.dtype})")


def command_encode(arguments: argparse.Namespace) -> None:
    from argen.data import encode_dataset, load_dataset, release_fingerprint, save_token_cache
    from argen.tokenizers import load_tokenizer

    tokenizer, _ = load_tokenizer(arguments.tokenizer)
    config = tokenizer.config
    dataset = load_dataset(
        arguments.data,
        split=arguments.split,
        data_dir=arguments.data_dir,
        image_size=config.image_size,
        channels=config.channels,
        verbose=arguments.verbose,
    )
    ids = encode_dataset(tokenizer, dataset, progress=not arguments.no_progress)
    save_token_cache(
        arguments.out,
        ids=ids,
        labels=dataset.labels,
        classes=dataset.classes,
        codebook_size=tokenizer.codebook_size,
        fingerprint=release_fingerprint(arguments.tokenizer),
        spec=arguments.data,
        split=arguments.split,
    )
    shapes = ", ".join(f"{height}×{width}" for height, width in tokenizer.grid_shapes)
    print(f"encoded {len(dataset)} images into grids {shapes}: {arguments.out}")


def command_train(arguments: argparse.Namespace) -> None:
    from argen.train import train_generator

    overrides = {
        name: getattr(arguments, name)
        for name in ("class_dropout", "dropout", "width", "depth", "heads")
        if getattr(arguments, name) is not None
    }
    if overrides.get("width", 1) % overrides.get("heads", 1):
        raise ArgenError(f"--width {overrides['width']} must be a multiple of the number of heads")
    train_generator(
        arguments.tokenizer,
        arguments.order,
        arguments.data,
        training=training_config(arguments),
        preset=arguments.preset,
        data_dir=arguments.data_dir,
        tokens=arguments.tokens,
        transformer_overrides=overrides,
    )


def parse_labels(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def command_sample(arguments: argparse.Namespace) -> None:
    from argen.pipeline import sample_to_files

    sample_to_files(
        arguments.model,
        labels=parse_labels(arguments.labels),
        per_label=arguments.num,
        cfg_scale=arguments.cfg_scale,
        cfg_schedule=arguments.cfg_schedule,
        temperature=arguments.temperature,
        top_k=arguments.top_k,
        top_p=arguments.top_p,
        seed=arguments.seed,
        **sampler_options(arguments),
        grid_path=arguments.out,
        progress_path=arguments.progress,
        npz_path=arguments.save_npz,
        batch_size=arguments.batch_size,
        device=arguments.device,
    )


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = none)")
    group.add_argument(
        "--cfg-schedule", choices=("constant", "linear"), default="constant", help="linear: VAR's ramp over steps"
    )
    group.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    group.add_argument("--top-k", type=int, default=0, help="keep the K most likely ids (0 = all)")
    group.add_argument("--top-p", type=float, default=1.0, help="keep the smallest set with this much probability")
    group.add_argument("--seed", type=int, default=0, help="the same seed gives the same images, bit for bit")
    group.add_argument("--batch-size", type=int, default=64, help="images generated per forward pass")
    group.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose a sampler and its options; `sampler_options` turns them into Pipeline keywords."""
    group = parser.add_argument_group("sampler")
    group.add_argument(
        "--sampler",
        choices=("ar", "jacobi", "collaborative"),
        default="ar",
        help="ar: plain decoding, one pass per step; jacobi: speculative Jacobi decoding (raster, neighbor), the "
        "same distribution in fewer passes; collaborative: collaborative decoding (scale, frequency), --model drafts "
        "the first --draft-steps steps and the smaller --refiner makes the rest",
    )
    group.add_argument(
        "--window", type=int, help="jacobi: draft steps verified per pass (default 16 raster, 4 neighbor)"
    )
    group.add_argument(
        "--refiner",
        metavar="DIR",
        help="collaborative: model directory of a smaller generator trained with the same order on the same "
        "tokenizer as --model (argen train --tokenizer MODEL/tokenizer ...)",
    )
    group.add_argument(
        "--draft-steps",
        type=int,
        metavar="N",
        help="collaborative: steps --model makes before --refiner takes over, from 0 (refiner alone) to every step "
        "(model alone); a 7×7 latent has 6 scales or bands",
    )


def sampler_options(arguments: argparse.Namespace) -> dict:
    """The `argen.Pipeline` keyword arguments (sampler=..., and its options) of `add_sampler_arguments`' flags."""
    options: dict = {"sampler": arguments.sampler}
    if arguments.window is not None:
        if arguments.sampler != "jacobi":
            raise ArgenError("--window is an option of --sampler jacobi: add --sampler jacobi or drop --window")
        options["window"] = arguments.window
    flags = {"--refiner": arguments.refiner, "--draft-steps": arguments.draft_steps}
    given = [flag for flag, value in flags.items() if value is not None]
    if arguments.sampler == "collaborative":
        if len(given) < 2:
            raise ArgenError("--sampler collaborative needs --refiner DIR (a smaller model) and --draft-steps N")
        options.update(refiner=arguments.refiner, draft_steps=arguments.draft_steps)
    elif given:
        raise ArgenError(f"{' and '.join(given)} go with --sampler collaborative: add it or drop them")
    return options


def build_parser() -> argparse.ArgumentParser:
    from argen.tokenizers import TokenizerConfig

    parser = argparse.ArgumentParser(
        prog="argen",
        description="Autoregressive image generation over learned tokenizers: next-frequency (NFIG), next-scale "
        "(VAR), raster and next-neighbor orders on one tokenizer, transformer, sampler and evaluation stack.",
        epilog="Run `argen COMMAND --help` for a command's flags. Add --debug to any command to see tracebacks. "
        "Scale out with `torchrun --nproc_per_node=N -m argen COMMAND ...`.",
    )
    parser.add_argument("--version", action="version", version=f"argen {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    common.add_argument(
        "--config",
        metavar="TOML",
        help="read this command's flags from a TOML file (keys are flag names without --, e.g. learning-rate = "
        "2e-3; see configs/); flags on the command line win",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    data_info = commands.add_parser(
        "data-info",
        parents=[common],
        help="describe an image source and write a grid of examples",
        description="Load both splits of an image source, print counts, shapes, classes and skipped files.",
    )
    add_data_arguments(data_info)
    data_info.add_argument("--grid", help="write a PNG grid of the first training images here")
    data_info.add_argument("--grid-count", type=int, default=64, help="how many images in the grid")
    data_info.set_defaults(handler=command_data_info)

    classifier = commands.add_parser(
        "train-classifier",
        parents=[common],
        help="train the small classifier whose features drive FID/KID/IS and class accuracy",
        description="Train a small CNN classifier on the train split; reports test accuracy at the end.",
    )
    add_data_arguments(classifier)
    add_training_arguments(classifier, batch_size=128, learning_rate=2e-3, weight_decay=0.05)
    classifier.add_argument("--width", type=int, default=32, help="base channel count of the CNN")
    classifier.add_argument("--shift", type=int, default=2, help="augment with random shifts of up to N pixels")
    classifier.add_argument("--flip", action="store_true", help="mirror images left-right as augmentation")
    classifier.add_argument("--dropout", type=float, default=0.2, help="dropout before the last layer")
    classifier.set_defaults(handler=command_train_classifier)

    tokenizer = commands.add_parser(
        "train-tokenizer",
        parents=[common],
        help="train an image tokenizer: vq, fsq, multiscale (VAR) or frequency (NFIG)",
        description="Train a conv autoencoder with a quantizer; the run directory becomes a tokenizer release.",
    )
    add_data_arguments(tokenizer)
    tokenizer.add_argument("--tokenizer", required=True, choices=("vq", "fsq", "multiscale", "frequency"))
    defaults = TokenizerConfig()  # the CLI's defaults are the library's, so the two never drift apart
    tokenizer.add_argument(
        "--codebook-size", type=int, default=defaults.codebook_size, help="K codes (vq, multiscale, frequency)"
    )
    tokenizer.add_argument("--width", type=int, default=defaults.width, help="channels of the first conv stage")
    tokenizer.add_argument(
        "--downsample", type=int, default=defaults.downsample, help="stride-2 stages: 28×28 → 7×7 with 2"
    )
    tokenizer.add_argument("--latent-dim", type=int, default=defaults.latent_dim, help="latent channels")
    tokenizer.add_argument(
        "--code-dim", type=int, default=defaults.code_dim, help="vq: dimension of the l2-normalised codes"
    )
    tokenizer.add_argument("--fsq-levels", type=integer_list, help="fsq: levels per dimension, e.g. 8,8,4,4")
    tokenizer.add_argument(
        "--scales", type=integer_list, help="multiscale/frequency: grid sides, coarse to fine (default from the size)"
    )
    tokenizer.add_argument(
        "--band-allocation",
        choices=("grid", "paper"),
        default=defaults.band_allocation,
        help="frequency: which latent frequencies each band holds: grid (default; band i holds frequencies its grid "
        "can represent, no band empty) or paper (FR-VAE's thresholds, which leave early bands empty on small latents)",
    )
    tokenizer.add_argument(
        "--band-geometry", choices=("radial", "square"), default="radial", help="frequency, paper allocation: masks"
    )
    tokenizer.add_argument(
        "--allow-empty-bands", action="store_true", help="frequency: train even if a band holds no frequency"
    )
    tokenizer.add_argument(
        "--no-carry-error", action="store_true", help="frequency: do not carry a band's quantization error onward"
    )
    tokenizer.add_argument("--reconstruction", choices=("l1", "l2"), default=defaults.reconstruction)
    tokenizer.add_argument(
        "--ssim-weight", type=float, default=defaults.ssim_weight, help="weight of the (1 - MS-SSIM) loss term"
    )
    add_training_arguments(tokenizer, batch_size=32, learning_rate=2e-3, warmup_steps=200, ema_decay=0.0)
    tokenizer.set_defaults(handler=command_train_tokenizer)

    evaluate = commands.add_parser(
        "eval-tokenizer",
        parents=[common],
        help="PSNR, SSIM, codebook usage, perplexity and bits per image of a tokenizer",
        description="Reconstruct a split with a trained tokenizer and measure it; saves originals above "
        "reconstructions as a PNG.",
    )
    evaluate.add_argument("--tokenizer", required=True, help="tokenizer directory (a train-tokenizer --out)")
    add_data_arguments(evaluate)
    evaluate.add_argument("--split", choices=("train", "test"), default="test")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N images")
    evaluate.add_argument("--json", help="also write the numbers to this JSON file")
    evaluate.add_argument("--image", help="PNG path (default: TOKENIZER/reconstructions-SPLIT.png)")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(handler=command_eval_tokenizer)

    encode = commands.add_parser(
        "encode",
        parents=[common],
        help="encode a dataset's images to token ids once (a cache for generator training)",
        description="Store every image's ids (compact integers) with the tokenizer's fingerprint; a cache made by "
        "another tokenizer is refused when read.",
    )
    encode.add_argument("--tokenizer", required=True, help="tokenizer directory")
    add_data_arguments(encode)
    encode.add_argument("--split", choices=("train", "test"), default="train")
    encode.add_argument("--out", required=True, help="cache file to write, e.g. tokens.safetensors")
    encode.add_argument("--no-progress", action="store_true")
    encode.set_defaults(handler=command_encode)

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train a generator: raster, scale (VAR), frequency (NFIG) or neighbor (NAR) on a tokenizer",
        description="Train the transformer under a generation order on a tokenizer's ids; --out becomes a model "
        "directory that `argen sample` and `argen.Pipeline.from_pretrained` load.",
    )
    train.add_argument("--tokenizer", required=True, help="tokenizer directory (train-tokenizer --out)")
    train.add_argument("--order", required=True, choices=("raster", "scale", "frequency", "neighbor"))
    add_data_arguments(train)
    train.add_argument("--preset", default="3m", choices=("tiny", "1m", "3m", "10m"), help="transformer size")
    train.add_argument("--tokens", help="token cache from `argen encode` (default: made in --out on first run)")
    train.add_argument("--class-dropout", type=float, help="probability of training on the null class (CFG)")
    train.add_argument("--dropout", type=float, help="dropout inside the transformer")
    train.add_argument("--width", type=int, help="transformer width, overriding the preset's (a multiple of --heads)")
    train.add_argument("--depth", type=int, help="transformer blocks, overriding the preset's")
    train.add_argument("--heads", type=int, help="attention heads, overriding the preset's")
    add_training_arguments(train, batch_size=128, learning_rate=1e-3, weight_decay=0.05, warmup_steps=200)
    train.set_defaults(handler=command_train)

    sample = commands.add_parser(
        "sample",
        parents=[common],
        help="generate images from a model directory: a grid, a progress GIF, an npz",
        description="Generate --num images per label and save them as one grid (a row per label).",
    )
    sample.add_argument("--model", required=True, help="model directory (argen train --out)")
    sample.add_argument("--labels", help="comma-separated class indices or names (default: every class)")
    sample.add_argument("--num", type=int, default=8, help="images per label (or in all, for unconditional models)")
    sample.add_argument("--out", default="samples.png", help="PNG grid to write")
    sample.add_argument("--progress", help="GIF of the decoded images after every step")
    sample.add_argument("--save-npz", help="npz with `images` (uint8) and `labels`, for external evaluators")
    add_sampling_arguments(sample)
    add_sampler_arguments(sample)
    sample.set_defaults(handler=command_sample)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="copy a model directory or a release without training state, weights in half precision",
        description="Write a shareable copy: config.json + model.safetensors per component, floating weights stored "
        "as --dtype (loading casts them back), no token cache or train_state.pt.",
    )
    export.add_argument("--model", required=True, help="model directory (argen train --out) or a release directory")
    export.add_argument("--out", required=True, help="directory to write")
    export.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    export.set_defaults(handler=command_export)

    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="train every order at one size and budget, evaluate them, write tables, a plot and sample grids",
        description="Train (or reuse) the tokenizers (vq for raster and neighbor, multiscale for scale, frequency "
        "for frequency), the classifier if none is given or shipped, and one generator per order with one shared "
        "recipe and budget; score --num samples of each and the real test split (the floor row); write "
        "OUT/results.json, OUT/results.md, OUT/quality-speed.png and OUT/samples-ORDER.png, OUT/progress-ORDER.gif. "
        "Training takes about (tokenizer kinds + orders) × the budget. Rerunning resumes and reuses measurements "
        "whose settings did not change.",
    )
    add_data_arguments(bench)
    bench.add_argument("--out", help="benchmark folder (default: runs/bench/DATA)")
    bench.add_argument(
        "--orders",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        default=["raster", "scale", "frequency", "neighbor"],
        help="comma-separated orders to compare (default: raster,scale,frequency,neighbor)",
    )
    bench.add_argument("--minutes", type=float, help="training minutes per generator (summed over resumes)")
    bench.add_argument("--steps", type=int, help="training steps per generator (the first budget reached wins)")
    bench.add_argument("--tokenizer-minutes", type=float, help="minutes per tokenizer (default: the generator budget)")
    bench.add_argument("--tokenizer-steps", type=int, help="steps per tokenizer (default: the generator budget)")
    bench.add_argument(
        "--evaluate-only", action="store_true", help="train nothing: measure the model directories already in --out"
    )
    bench.add_argument("--preset", default="1m", choices=("tiny", "1m", "3m", "10m"), help="transformer size")
    bench.add_argument("--num", type=int, default=10000, help="images generated and scored per order")
    bench.add_argument(
        "--classifier", help="feature network (default: the shipped one for --data, else one trained in OUT/classifier)"
    )
    bench.add_argument("--classifier-steps", type=int, default=1000, help="steps when the classifier is trained here")
    bench.add_argument("--cfg-scale", type=float, default=2.0, help="classifier-free guidance for every order")
    bench.add_argument("--per-class", type=int, default=8, help="samples per class in each grid")
    bench.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    recipe = bench.add_argument_group("recipe (shared by every order and tokenizer)")
    recipe.add_argument("--batch-size", type=int, default=64, help="generator batch size (tokenizers use 32)")
    recipe.add_argument("--learning-rate", type=float, default=2e-3, help="generator learning rate (tokenizers 2e-3)")
    recipe.add_argument("--warmup-steps", type=int, default=200, help="learning-rate warmup of every training")
    recipe.add_argument("--tokenizer-width", type=int, default=16, help="channels of the tokenizers' first stage")
    recipe.add_argument("--latent-dim", type=int, default=32, help="latent channels of the tokenizers")
    recipe.add_argument("--codebook-size", type=int, default=1024, help="codes per tokenizer")
    bench.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    bench.set_defaults(handler=command_bench)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="sample every shipped Fashion-MNIST pipeline and write demo/index.html (under a minute on a CPU)",
        description="Load the shipped pipelines (checkpoints/fashion-mnist/<order>/), sample a grid and a "
        "step-by-step GIF per order, time them, and write a page with the speed and quality tables.",
    )
    demo.add_argument("--checkpoints", help="folder of <order>/ model directories (default: the shipped ones)")
    demo.add_argument("--data", default="fashion-mnist", help="which shipped checkpoints to use")
    demo.add_argument("--out", default="demo", help="folder to write index.html and the pictures into")
    demo.add_argument("--num", type=int, default=4, help="samples per class")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--cfg-scale", type=float, help="guidance scale (default: the one results.json was made with)")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(handler=command_demo)

    evaluate = commands.add_parser(
        "eval",
        parents=[common],
        help="FID, KID, IS, precision/recall, class accuracy and speed of a generator, offline",
        description="Generate --num images (classes balanced) with a model directory, or read them from an npz, "
        "or take a real split as the baseline; score them with a classifier's features against the --data "
        "reference split; print a table and optionally write JSON.",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model directory to sample from (argen train --out)")
    source.add_argument("--samples", help="npz of uint8 images (and labels), e.g. from `argen sample --save-npz`")
    source.add_argument(
        "--real", choices=("train", "test"), help="score a real split instead: the floor a perfect generator reaches"
    )
    evaluate.add_argument(
        "--classifier", help="feature network: a train-classifier --out (default: the shipped one for --data)"
    )
    evaluate.add_argument("--num", type=int, default=10000, help="images to generate (or take from --real)")
    evaluate.add_argument(
        "--reference-split", choices=("train", "test"), default="train", help="real images the metrics compare to"
    )
    add_data_arguments(evaluate, shape=False)  # the classifier fixes size and channels
    evaluate.add_argument("--json", help="also write the results to this JSON file")
    evaluate.add_argument("--save-npz", help="also save the scored images (uint8) and labels to this npz")
    evaluate.add_argument(
        "--inception-weights",
        metavar="PTH",
        help="also compute the papers' Inception-FID from this local torch-fidelity weights file (needs "
        "torch-fidelity and a matching torchvision; slow on a CPU: every image is resized to 299×299)",
    )
    evaluate.add_argument("--no-progress", action="store_true")
    add_sampling_arguments(evaluate)
    add_sampler_arguments(evaluate)
    evaluate.set_defaults(handler=command_eval, batch_size=100)

    from argen.commands import compress, decompress, train_residual  # command modules (argen/commands/)

    for module in (compress, decompress, train_residual):
        subparser = commands.add_parser(module.NAME, parents=[common], help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(subparser)
        subparser.set_defaults(handler=module.run)
    return parser


def config_path(argv: list[str]) -> str | None:
    for index, argument in enumerate(argv):
        if argument == "--config" and index + 1 < len(argv):
            return argv[index + 1]
        if argument.startswith("--config="):
            return argument.split("=", 1)[1]
    return None


def apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Make a --config TOML file's values the defaults of its command, so that explicit flags still win.

    Keys are the command's long flag names without the dashes; an optional ``command = "train"`` key guards against
    handing one command's recipe to another. Unknown keys and wrongly typed values are refused before any work.
    """
    path = config_path(argv)
    if path is None:
        return
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    subcommands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    command = next((argument for argument in argv if argument in subcommands.choices), None)
    if command is None:
        raise ArgenError(
            "--config goes after a command, e.g. argen train --config configs/fashion-mnist/frequency.toml"
        )
    try:
        values = tomllib.loads(Path(path).read_text())
    except OSError as error:
        raise ArgenError(f"cannot read --config {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ArgenError(f"--config {path} is not valid TOML: {error}") from None
    expected = values.pop("command", command)
    if expected != command:
        raise ArgenError(f"{path} is a recipe for `argen {expected}`, not `argen {command}`")
    subparser = subcommands.choices[command]
    flags = {
        option[2:]: action
        for action in subparser._actions
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--config")
    }
    defaults = {}
    for key, value in values.items():
        action = flags.get(key)
        if action is None:
            raise ArgenError(f"{path}: `argen {command}` has no flag --{key} (see argen {command} --help)")
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise ArgenError(f"{path}: {key} is a switch, give true or false")
        elif isinstance(value, (dict, list)) or isinstance(value, bool):
            raise ArgenError(f"{path}: {key} takes one value, got {value!r}")
        else:
            try:
                value = action.type(value) if action.type is not None else str(value)
            except (TypeError, ValueError):
                raise ArgenError(f"{path}: {key} = {value!r} is not a valid value") from None
            if action.choices is not None and value not in action.choices:
                choices = ", ".join(map(str, action.choices))
                raise ArgenError(f"{path}: {key} must be one of {choices}, got {value!r}")
        defaults[action.dest] = value
        action.required = False  # given by the file
    subparser.set_defaults(**defaults)


def run(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the command; errors propagate (for tests and library use)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    apply_config(parser, argv)
    arguments = parser.parse_args(argv)
    if getattr(arguments, "handler", None) is None:
        parser.print_help()
        return
    arguments.argv = argv  # what produced a result (argen bench records it)
    handler: Callable[[argparse.Namespace], None] = arguments.handler
    handler(arguments)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, exit codes 1 (error) and 130 (Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        run(argv)
    except ArgenError as error:
        if debug:
            raise
        print(f"argen: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        if debug:
            raise
        print("argen: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # a bug: still one line by default, the traceback with --debug
        if debug:
            raise
        print(f"argen: error: {type(error).__name__}: {error} (rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
