"""`argen bench`: every generation order trained and measured on equal terms, in one command.

The question it answers is the one argen exists for: on the same data, which order (raster next-token as in
LlamaGen, next-scale as in VAR, next-frequency as in NFIG, next-neighbor as in NAR) gives the best images for the
compute, and how fast does each sample? A comparison only answers that when nothing but the order differs, so
every setting is shared: one transformer preset, batch size, learning rate, schedule and training budget for all
generators; one tokenizer recipe (width, latent channels, codebook size, budget) for every tokenizer kind (raster
and next-neighbor read a single vq grid, next-scale the multiscale grids, next-frequency the frequency bands); one
classifier whose features score every order against the same real reference split; one sampling setting (guidance
scale, seed, image count). ``--steps`` gives every generator exactly the same number of updates; ``--minutes`` the
same wall time, in which orders with more tokens per image (104 for the multi-grid tokenizers against 49) take
fewer steps.

Layout of OUT::

    tokenizers/<kind>/      tokenizer runs (argen train-tokenizer --out)
    <order>/                model directories (argen train --out); <order>/eval.json caches the measurements
    classifier/             the feature classifier, trained only when --classifier is not given and none is shipped
    results.json            everything measured (the schema `argen demo` reads), results.md the tables,
    quality-speed.png       FID against images/s, samples-<order>.png (a row per class), progress-<order>.gif

Rerunning resumes: a finished training returns at once, a measurement is reused while its settings (model weights,
classifier, image count, guidance, seed) are unchanged, so only what is missing or changed is redone.
``evaluate_only`` measures model directories already in OUT (the shipped checkpoints, say) without training.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from argen.apps.bench_measurements import Measurements, say
from argen.apps.bench_report import plot_quality_speed, results_markdown, results_table
from argen.checkpoint import atomic_write_text, shipped_checkpoint
from argen.errors import ArgenError, install_hint
from argen.orders import ORDERS, default_tokenizers

# The shared recipe (bench/tokenizers.py and bench/generators.py measured it): tokenizers at batch 32, lr 2e-3
# without EMA (train-tokenizer's default); generators at batch 64, lr 2e-3, weight decay 0.05; the classifier at
# train-classifier's defaults.
TOKENIZER_BATCH_SIZE = 32
TOKENIZER_LEARNING_RATE = 2e-3
GENERATOR_WEIGHT_DECAY = 0.05
CLASSIFIER_BATCH_SIZE = 128
CLASSIFIER_LEARNING_RATE = 2e-3
CLASSIFIER_WEIGHT_DECAY = 0.05
SAVE_EVERY = 200


def default_out(data: str) -> str:
    """runs/bench/<data>, with a folder source named after its last path part."""
    name = Path(data.removeprefix("folder:")).name if data.startswith("folder:") else data
    return str(Path("runs") / "bench" / (re.sub(r"[^A-Za-z0-9._-]+", "-", name) or "data"))


def check_evaluation_extras() -> None:
    """Refuse before any training when the `eval` extra is missing: the plot and the metrics need it."""
    for module in ("matplotlib", "torchmetrics"):
        try:
            __import__(module)
        except ImportError:
            raise ArgenError(f"argen bench needs {module}: {install_hint('eval')}") from None


def stopped_by_user(result) -> None:
    """fit turns the first Ctrl-C into a clean stop; the bench must not go on with a half-trained component."""
    if result.reason == "interrupted":
        raise KeyboardInterrupt


@dataclass
class BenchmarkConfig:
    """Everything one `argen bench` run is: the data, the orders, one recipe and budget, the measurement settings.

    ``minutes``/``steps`` is each generator's budget, ``tokenizer_minutes``/``tokenizer_steps`` each tokenizer's
    (default: the generator budget). ``num_images`` images per order (and of the real test split, the floor row)
    are scored against the train split with ``classifier`` (default: the shipped one for ``data``, else one trained
    in ``out/classifier`` for ``classifier_steps`` steps). ``per_class`` samples per class in each grid. ``orders``
    defaults to every registered order. ``command`` is recorded as what produced the results.
    """

    data: str
    out: str | Path | None = None
    minutes: float | None = None
    steps: int | None = None
    tokenizer_minutes: float | None = None
    tokenizer_steps: int | None = None
    preset: str = "1m"
    orders: list[str] | None = None
    num_images: int = 10000
    classifier: str | Path | None = None
    classifier_steps: int = 1000
    cfg_scale: float = 2.0
    evaluate_only: bool = False
    data_dir: str | None = None
    image_size: int | None = None
    channels: int | None = None
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    tokenizer_width: int = 16
    latent_dim: int = 32
    codebook_size: int = 1024
    per_class: int = 8
    seed: int = 0
    evaluation_batch_size: int = 100
    device: str | None = None
    command: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out or default_out(self.data))
        self.orders = list(dict.fromkeys(self.orders if self.orders is not None else ORDERS))
        if self.tokenizer_minutes is None and self.tokenizer_steps is None:
            self.tokenizer_minutes, self.tokenizer_steps = self.minutes, self.steps

    def check(self) -> None:
        """Refuse, before any work, what cannot run: unknown orders, too few images, no budget, missing models."""
        unknown = [order for order in self.orders if order not in ORDERS]
        if unknown or not self.orders:
            raise ArgenError(f"unknown order {', '.join(unknown) or '(none)'}: choose from {', '.join(ORDERS)}")
        if self.num_images < 2:
            raise ArgenError(f"--num {self.num_images}: FID needs at least 2 images per order")
        if self.per_class < 1:
            raise ArgenError(f"--per-label {self.per_class}: the sample grids need at least one image per class")
        check_evaluation_extras()
        if self.evaluate_only:
            for order in self.orders:
                for part in ("generator", "tokenizer"):
                    if not (self.out / order / part / "config.json").is_file():
                        raise ArgenError(
                            f"--evaluate-only: {self.out / order} has no trained model ({part}/config.json is "
                            "missing); train it with `argen bench` without --evaluate-only, or leave it out of --orders"
                        )
        elif self.minutes is None and self.steps is None:
            raise ArgenError(
                "no training budget: give each generator --minutes M or --steps N (tokenizers get the same unless "
                "--tokenizer-minutes/--tokenizer-steps), or pass --evaluate-only to measure models already in --out"
            )

    @property
    def evaluation_device(self) -> str:
        import torch

        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def training(self, out: Path, **fields):
        """The `TrainingConfig` of one component of the benchmark: shared seed, device, checkpoints, progress."""
        from argen.train import TrainingConfig

        return TrainingConfig(
            out=str(out), save_every=SAVE_EVERY, seed=self.seed, device=self.device, progress=self.progress, **fields
        )

    def budget(self) -> dict:
        """The recipe and budget as results.json records them."""
        if self.evaluate_only:
            return {"evaluate_only": True}
        return {
            "evaluate_only": False, "steps": self.steps, "minutes": self.minutes,
            "tokenizer_steps": self.tokenizer_steps, "tokenizer_minutes": self.tokenizer_minutes,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
            "tokenizer_width": self.tokenizer_width, "latent_dim": self.latent_dim, "codebook_size": self.codebook_size,
            "tokenizer_batch_size": TOKENIZER_BATCH_SIZE, "tokenizer_learning_rate": TOKENIZER_LEARNING_RATE,
        }  # fmt: skip


def run_benchmark(config: BenchmarkConfig) -> dict:
    """Train (or reuse) the tokenizers, the classifier and one generator per order in ``config.out``, measure them,
    and write ``results.json``, ``results.md``, ``quality-speed.png`` and a sample grid and GIF per order.

    Returns the results.json document.
    """
    config.check()
    # 1. The classifier first: it is quick, and data it cannot use (no labels) fails before hours of training.
    classifier_directory = prepare_classifier(config)
    # 2. Tokenizers, one per kind the orders need, then 3. one generator per order, all on one recipe.
    if not config.evaluate_only:
        train_tokenizers(config)
        train_generators(config)
    # 4. Measurements. The real images' features are computed at most once, and only if something is not cached.
    measurements = Measurements(config, classifier_directory)
    real = measurements.real()
    rows = {order: measurements.order(order, index) for index, order in enumerate(config.orders, start=1)}
    results = {
        "data": config.data,
        "command": config.command,
        "preset": config.preset,
        "budget": config.budget(),
        "num_images": config.num_images,
        "cfg_scale": config.cfg_scale,
        "classifier": str(classifier_directory),
        "classifier_test_accuracy": measurements.classifier_accuracy,
        "real": real,
        "orders": rows,
    }
    plot_quality_speed(results, config.out / "quality-speed.png")
    atomic_write_text(config.out / "results.md", results_markdown(results))
    atomic_write_text(config.out / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def prepare_classifier(config: BenchmarkConfig) -> Path:
    """The feature classifier's directory: given, shipped, or trained in OUT/classifier (not with --evaluate-only)."""
    given = Path(config.classifier) if config.classifier else shipped_checkpoint(config.data, "classifier")
    if given is not None:
        if not (given / "config.json").is_file():
            raise ArgenError(f"--classifier {given} is not a classifier directory (no config.json)")
        return given
    directory = config.out / "classifier"
    if config.evaluate_only:
        if not (directory / "config.json").is_file():
            raise ArgenError(
                f"--evaluate-only: no classifier for {config.data} (none given, none shipped, none in "
                f"{directory}): pass --classifier DIR or run without --evaluate-only to train one"
            )
        return directory
    from argen.train import train_classifier

    say(f"classifier in {directory}")
    training = config.training(
        directory, steps=config.classifier_steps, batch_size=CLASSIFIER_BATCH_SIZE,
        learning_rate=CLASSIFIER_LEARNING_RATE, weight_decay=CLASSIFIER_WEIGHT_DECAY,
    )  # fmt: skip
    stopped_by_user(
        train_classifier(
            config.data,
            training=training,
            data_dir=config.data_dir,
            image_size=config.image_size,
            channels=config.channels,
        )  # fmt: skip
    )
    return directory


def tokenizer_directory(config: BenchmarkConfig, order: str) -> Path:
    """Where the tokenizer an order reads is trained: one per kind, shared by the orders of that kind."""
    return config.out / "tokenizers" / default_tokenizers()[order]


def train_tokenizers(config: BenchmarkConfig) -> None:
    """Train (or resume, or find finished) each tokenizer kind the orders need, all on one recipe."""
    from argen.tokenizers import TokenizerConfig
    from argen.train import train_tokenizer

    kinds = list(dict.fromkeys(default_tokenizers()[order] for order in config.orders))
    for index, kind in enumerate(kinds, start=1):
        out = config.out / "tokenizers" / kind
        say(f"tokenizer {kind} ({index}/{len(kinds)}) in {out}")
        tokenizer = TokenizerConfig(
            kind=kind, width=config.tokenizer_width, latent_dim=config.latent_dim, codebook_size=config.codebook_size
        )
        training = config.training(
            out, steps=config.tokenizer_steps, minutes=config.tokenizer_minutes, batch_size=TOKENIZER_BATCH_SIZE,
            learning_rate=TOKENIZER_LEARNING_RATE, warmup_steps=config.warmup_steps, ema_decay=0.0,
        )  # fmt: skip
        stopped_by_user(
            train_tokenizer(
                config.data,
                tokenizer=tokenizer,
                training=training,
                data_dir=config.data_dir,
                image_size=config.image_size,
                channels=config.channels,
            )  # fmt: skip
        )


def train_generators(config: BenchmarkConfig) -> None:
    """Train (or resume, or find finished) each order's generator on its tokenizer, all on one recipe and budget."""
    from argen.checkpoint import release_fingerprint
    from argen.train import train_generator

    for index, order in enumerate(config.orders, start=1):
        tokenizer, model_directory = tokenizer_directory(config, order), config.out / order
        generator_config = model_directory / "generator" / "config.json"
        if generator_config.is_file():
            # A tokenizer trained further after this generator was made would silently pair the generator with
            # ids it never saw; say so rather than resume.
            trained_on = json.loads(generator_config.read_text()).get("extra", {}).get("tokenizer_fingerprint")
            if trained_on != release_fingerprint(tokenizer):
                raise ArgenError(
                    f"{model_directory} was trained on another state of {tokenizer} (did the tokenizer budget "
                    f"change?): delete {model_directory} to retrain it on the tokenizer as it is now"
                )
        say(f"generator {order} ({index}/{len(config.orders)}) in {model_directory}")
        training = config.training(
            model_directory, steps=config.steps, minutes=config.minutes, batch_size=config.batch_size,
            learning_rate=config.learning_rate, weight_decay=GENERATOR_WEIGHT_DECAY, warmup_steps=config.warmup_steps,
        )  # fmt: skip
        stopped_by_user(
            train_generator(
                str(tokenizer),
                order,
                config.data,
                training=training,
                preset=config.preset,
                data_dir=config.data_dir,
                # one token cache per tokenizer: raster and neighbor share the vq ids instead of encoding 60 000
                # images twice (the cache records the tokenizer's fingerprint, so a retrained one's is refused)
                tokens=str(tokenizer / "tokens-train.safetensors"),
            )  # fmt: skip
        )


__all__ = ["BenchmarkConfig", "default_out", "results_table", "run_benchmark"]
