"""The flags several commands share, and the helpers that turn them into library arguments.

Command modules (argen/commands/*.py) call these from their ``add_arguments`` and ``run``.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path

from argen.errors import ArgenError, ArgenWarning

# --num means one thing in every command: images in all. Per label (or per class) is --per-label.
NUM_HELP = "images in all"


class OldSpelling(argparse.Action):
    """A flag's old spelling, still accepted: stored as the new flag, with an `ArgenWarning` naming the new one."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, meaning: str, **keywords) -> None:
        super().__init__(option_strings, dest, **keywords)
        self.new, self.meaning = new, meaning

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warnings.warn(
            f"{option_string} here means {self.meaning}, as {self.new} does: write {self.new} (--num is images in "
            "all in every other command)",
            ArgenWarning,
            stacklevel=2,
        )
        setattr(namespace, self.dest, values)


def add_per_label_arguments(parser: argparse.ArgumentParser, *, default: int, meaning: str) -> None:
    """--per-label N, and --num N as its old spelling in the commands where --num used to mean that."""
    parser.add_argument("--per-label", type=int, default=default, metavar="N", help=meaning)
    parser.add_argument(
        "--num", dest="per_label", type=int, metavar="N", action=OldSpelling, new="--per-label", meaning=meaning,
        help="old spelling of --per-label, still accepted (elsewhere --num counts images in all)",
    )  # fmt: skip


def add_data_arguments(parser: argparse.ArgumentParser, *, shape: bool = True) -> None:
    """--data and where to find it; ``shape`` adds --image-size/--channels (not for commands whose model fixes them)."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        required=True,
        help="image source: fashion-mnist, mnist, cifar10, or folder:PATH (images in class subfolders; or a .tar/.tgz)",
    )
    group.add_argument(
        "--data-dir", help="folder holding the IDX files (default: $ARGEN_DATA, ~/.cache/argen, Debian's package)"
    )
    if shape:
        group.add_argument(
            "--image-size", type=image_side, help="resize + centre-crop to this side (default: native, 32 for folders)"
        )
        group.add_argument(
            "--channels", type=int, choices=(1, 3), help="1 grayscale or 3 RGB (default: native, 3 for folders)"
        )
    group.add_argument("--verbose", action="store_true", help="list every skipped file")


# The largest --image-size: argen keeps a data set's pixels in memory, and 60 000 RGB images of 1024² already take
# 180 GiB; beyond this a typo (100000) would be an out-of-memory kill instead of an answer.
MAX_IMAGE_SIDE = 1024


def image_side(text: str) -> int:
    """--image-size: a whole number of pixels in [1, MAX_IMAGE_SIDE], else a one-line refusal."""
    from argen.train.config import whole_number

    return whole_number("image_size", text, minimum=1, maximum=MAX_IMAGE_SIDE)


def seed_value(text: str) -> int:
    """--seed: a whole number in [0, 2^63 - 1] (what torch.manual_seed takes), else a one-line refusal."""
    from argen.train.config import MAX_SEED, whole_number

    return whole_number("seed", text, minimum=0, maximum=MAX_SEED)


def output_path(flag: str, *, folder: bool = False) -> Callable[[str], str]:
    """An argparse ``type`` for an output flag, so a path that cannot take what the command writes is refused in one
    line when the flags are read, before any work: a file where a folder goes, a folder where a file goes, or a
    file where one of its parent folders should be. An existing file where a file goes is replaced, as asked."""

    def check(text: str) -> str:
        path = Path(text)
        if folder and path.exists() and not path.is_dir():
            raise ArgenError(
                f"{flag} {text} is an existing file, and this command writes a folder: choose another path"
            )
        if not folder and path.is_dir():
            raise ArgenError(f"{flag} {text} is a folder, and this command writes a file: give a file's path")
        parent = next((parent for parent in path.absolute().parents if parent.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ArgenError(f"{flag} {text}: {parent} is a file, not a folder: choose another path")
        return text

    return check


def order_choices() -> str:
    """The registered orders for help text: "raster (LlamaGen), scale (VAR), ..."."""
    from argen.orders import ORDERS

    return ", ".join(f"{name} ({order.paper})" for name, order in ORDERS.items())


def add_preset_argument(parser: argparse.ArgumentParser, *, default: str) -> None:
    """--preset, one of `argen.model.PRESETS`."""
    from argen.model import PRESETS

    sizes = ", ".join(f"{name} ({', '.join(f'{key} {value}' for key, value in fields.items())})"
                      for name, fields in PRESETS.items())  # fmt: skip
    parser.add_argument("--preset", default=default, choices=list(PRESETS), help=f"transformer size: {sizes}")


def _checked(name: str, check: Callable[[str, object], object]) -> Callable[[str], object]:
    """An argparse ``type`` applying a `TrainingConfig` field's check: a bad value is a one-line `ArgenError`, for a
    flag and for a ``--config`` TOML value alike (`argen.commands.config_file.checked_value` calls the same type)."""

    def convert(text: str) -> object:
        return check(name, text)

    convert.__name__ = name  # argparse names the type in its own messages
    return convert


def with_default(help_text: str, default: object) -> str:
    """``help_text`` followed by "(default: X)", so --help shows every default."""
    if default is None or default is False or default == argparse.SUPPRESS or "default" in help_text:
        return help_text
    return f"{help_text} (default: {default})"


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append "(default: X)" to the help of every flag of ``parser`` that has a default and does not name it."""
    # `_actions` is argparse's one private name read here (see `argen.commands.config_file.long_flags`).
    for action in parser._actions:
        if action.help not in (None, argparse.SUPPRESS) and action.nargs != 0:
            action.help = with_default(action.help, action.default)


def add_training_arguments(parser: argparse.ArgumentParser, **defaults: object) -> None:
    """The budget, optimizer and checkpoint flags every trainer shares, generated from `argen.train.TrainingConfig`.

    One flag per field, with the field's help text and check; ``defaults`` are the trainer's own recipe where it
    differs from the dataclass's (e.g. ``batch_size=32`` for tokenizers). The "speed" fields come from
    `add_speed_arguments`.
    """
    from argen.train import TrainingConfig

    unknown = set(defaults) - {setting.name for setting in fields(TrainingConfig)}
    if unknown:
        raise ValueError(f"not TrainingConfig fields: {sorted(unknown)}")
    group = parser.add_argument_group("training")
    for setting in fields(TrainingConfig):
        metadata = setting.metadata
        if metadata.get("group") == "speed":
            continue
        default = defaults.get(setting.name, setting.default)
        required = default is MISSING
        default = None if required else default
        flag = metadata.get("flag", "--" + setting.name.replace("_", "-"))
        if setting.type in ("bool", bool):
            # A switch: --fresh sets True; --no-progress (the inverted flag) sets progress False.
            action = "store_false" if flag.startswith("--no-") else "store_true"
            group.add_argument(flag, dest=setting.name, action=action, default=default, help=metadata["help"])
            continue
        check = metadata.get("check")
        group.add_argument(
            flag, dest=setting.name, required=required, default=default, choices=metadata.get("choices"),
            type=_checked(setting.name, check) if check is not None else None,
            help=with_default(metadata["help"], default),
        )  # fmt: skip


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """--compile and --precision (training and sampling)."""
    from argen.model import PRECISIONS

    group = parser.add_argument_group("speed")
    group.add_argument(
        "--compile", action="store_true",
        help="torch.compile the transformer (inductor; the first batches pay the compile time, tens of seconds)",
    )  # fmt: skip
    group.add_argument(
        "--precision", choices=PRECISIONS, default="fp32",
        help="bf16: autocast matmuls and attention to bfloat16 (for GPUs; slower on most CPUs)",
    )  # fmt: skip


def speed_arguments(arguments: argparse.Namespace) -> dict:
    return {"compile": arguments.compile, "precision": arguments.precision}


def training_config(arguments: argparse.Namespace):
    """The `TrainingConfig` of `add_training_arguments`' flags (and --compile/--precision where present)."""
    from argen.train import TrainingConfig

    values = {setting.name: getattr(arguments, setting.name) for setting in fields(TrainingConfig)
              if hasattr(arguments, setting.name)}  # fmt: skip
    return TrainingConfig(**values)


def integer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,3, got {text!r}") from None


def parse_labels(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def evaluation_classifier(arguments: argparse.Namespace) -> str | Path:
    """The feature network of `argen eval` / `argen tune`: --classifier, else the one shipped for --data."""
    from argen.checkpoint import shipped_checkpoint

    classifier = arguments.classifier or shipped_checkpoint(arguments.data, "classifier")
    if classifier is None:
        raise ArgenError(
            f"no classifier for {arguments.data}: train one with `argen train-classifier --data {arguments.data} "
            "--out DIR` and pass --classifier DIR"
        )
    return classifier


def print_results(results: dict) -> None:
    """A two-column table of a results dict (nested dicts flattened as parent.child; long lists such as the radial
    power spectrum are summarised, they are in full in --json)."""
    rows = []
    for name, value in results.items():
        if isinstance(value, dict):
            rows += [(f"{name}.{key}", inner) for key, inner in value.items()]
        else:
            rows.append((name, value))
    rows = [(name, f"[{len(value)} values, in --json]" if isinstance(value, list) and len(value) > 8 else value)
            for name, value in rows]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "sampling", "settings left out take the model's recommended ones (MODEL/sampling.json), else the default shown"
    )
    group.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (1 = none; default 1)")
    group.add_argument(
        "--cfg-schedule", choices=("constant", "linear"), help="linear: VAR's ramp over steps (default constant)"
    )
    group.add_argument("--temperature", type=float, help="0 = greedy (default 1)")
    group.add_argument("--top-k", type=int, help="keep the K most likely ids (0 = all, the default)")
    group.add_argument("--top-p", type=float, help="keep the smallest set with this much probability (default 1)")
    group.add_argument("--seed", type=seed_value, default=0, help="the same seed gives the same images, bit for bit")
    group.add_argument("--batch-size", type=int, default=64, help="images generated per forward pass")
    group.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def sampling_arguments(arguments: argparse.Namespace) -> dict:
    """The sampling settings given on the command line; None where left out (the model's recommendation applies).
    Those given are checked here, before any model is loaded or image made (`argen.samplers.logits.check_sampling`)."""
    from argen.model_directory import SAMPLING_DEFAULTS
    from argen.samplers.logits import check_sampling

    names = ("cfg_scale", "cfg_schedule", "temperature", "top_k", "top_p")
    given = {name: getattr(arguments, name) for name in names}
    check_sampling(**{**SAMPLING_DEFAULTS, **{name: value for name, value in given.items() if value is not None}})
    return given


def print_sampling_settings(pipeline, given: dict) -> None:
    """One line naming the settings a command samples with and where each came from."""
    settings = pipeline.sampling_settings(**given)
    parts = []
    for name, value in settings.items():
        source = "" if given.get(name) is not None else " (model)" if name in pipeline.recommended else ""
        parts.append(f"{name} {value}{source}")
    print("sampling: " + ", ".join(parts))


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """--sampler and every registered sampler's options; `sampler_options` turns them into Pipeline keywords."""
    from argen.samplers import SAMPLERS

    group = parser.add_argument_group("sampler")
    infos = [SAMPLERS.info(name) for name in SAMPLERS]
    described = []
    for info in infos:
        fits = f" ({', '.join(info.supported_orders())})" if info.needs else ""
        described.append(f"{info.name}: {info.method}{fits}, {info.help}")
    group.add_argument("--sampler", choices=list(SAMPLERS), default="ar", help="; ".join(described))
    flags: set[str] = set()
    for info in infos:
        for option in info.options:
            if option.flag not in flags:  # samplers may share an option
                flags.add(option.flag)
                group.add_argument(
                    option.flag, dest=option.keyword, type=option.type, metavar=option.metavar,
                    help=f"{info.name}: {option.help}",
                )  # fmt: skip


def sampler_options(arguments: argparse.Namespace) -> dict:
    """The `argen.Pipeline` keyword arguments (sampler=..., and its options) of `add_sampler_arguments`' flags.

    An option given for another sampler than the chosen one, or a required one left out, is refused in one line.
    """
    from argen.samplers import SAMPLERS

    chosen = SAMPLERS.info(arguments.sampler)
    options: dict = {"sampler": arguments.sampler}
    misplaced: dict[str, list[str]] = {}  # sampler → its flags given without it
    for name in SAMPLERS:
        for option in SAMPLERS.info(name).options:
            value = getattr(arguments, option.keyword, None)
            if value is None:
                continue
            if option in chosen.options:
                options[option.keyword] = value
            elif all(option.flag not in flags for flags in misplaced.values()):
                misplaced.setdefault(name, []).append(option.flag)
    for name, flags in misplaced.items():
        if len(flags) == 1:
            raise ArgenError(f"{flags[0]} is an option of --sampler {name}: add --sampler {name} or drop {flags[0]}")
        raise ArgenError(f"{' and '.join(flags)} go with --sampler {name}: add it or drop them")
    missing = [option for option in chosen.options if option.required and option.keyword not in options]
    if missing:
        needed = " and ".join(
            f"{option.flag} {option.metavar or 'VALUE'}" for option in chosen.options if option.required
        )
        raise ArgenError(f"--sampler {chosen.name} needs {needed}")
    return options
