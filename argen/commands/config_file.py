"""``--config recipe.toml``: a TOML file's values become the defaults of one command, so explicit flags still win.

Keys are the command's long flag names without the dashes (``learning-rate = 2e-3``); an optional
``command = "train"`` key guards against handing one command's recipe to another. Unknown keys and wrongly typed
values are refused before any work starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from argen.errors import ArgenError


def config_path(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv``, or None."""
    for index, argument in enumerate(argv):
        if argument == "--config" and index + 1 < len(argv):
            return argv[index + 1]
        if argument.startswith("--config="):
            return argument.split("=", 1)[1]
    return None


def read_config(path: str) -> dict:
    """The TOML file's table; one-line errors for a missing or malformed file."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as error:
        raise ArgenError(f"cannot read --config {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ArgenError(f"--config {path} is not a text file (a TOML recipe is UTF-8 text)") from None
    except tomllib.TOMLDecodeError as error:
        raise ArgenError(f"--config {path} is not valid TOML: {error}") from None


def long_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Flag name without dashes → its action, for every long flag of ``parser`` but --help and --config."""
    # argparse has no public list of a parser's actions; `_actions` is the one private name read here (the actions
    # themselves are public objects: option_strings, dest, nargs, type, choices, required).
    return {
        option[2:]: action
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--config")
    }


def checked_value(action: argparse.Action, key: str, value: object, path: str) -> object:
    """``value`` converted the way the command line would convert it, or a one-line refusal."""
    if action.nargs == 0:  # a switch (store_true / store_false)
        if not isinstance(value, bool):
            raise ArgenError(f"{path}: {key} is a switch, give true or false")
        # An inverted switch (--no-progress stores progress=False): `no-progress = true` means progress False.
        return (not value) if action.const is False else value
    if isinstance(value, (dict, list, bool)):
        raise ArgenError(f"{path}: {key} takes one value, got {value!r}")
    try:
        value = action.type(value) if action.type is not None else str(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise ArgenError(f"{path}: {key} = {value!r} is not a valid value") from None
    except ArgenError as error:  # a setting's own check (argen.train.config): say which file it came from
        raise ArgenError(f"{path}: {error}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ArgenError(f"{path}: {key} must be one of {choices}, got {value!r}")
    return value


def apply_config(argv: list[str], commands: dict[str, argparse.ArgumentParser]) -> None:
    """If ``argv`` has ``--config PATH``, make the file's values the defaults of its command's parser.

    ``commands`` maps each subcommand name to its parser (see `argen.cli.build_parsers`).
    """
    path = config_path(argv)
    if path is None:
        return
    command = next((argument for argument in argv if argument in commands), None)
    if command is None:
        raise ArgenError(
            "--config goes after a command, e.g. argen train --config configs/fashion-mnist/frequency.toml"
        )
    values = read_config(path)
    expected = values.pop("command", command)
    if expected != command:
        raise ArgenError(f"{path} is a recipe for `argen {expected}`, not `argen {command}`")
    parser = commands[command]
    flags = long_flags(parser)
    defaults = {}
    for key, value in values.items():
        action = flags.get(key)
        if action is None:
            raise ArgenError(f"{path}: `argen {command}` has no flag --{key} (see argen {command} --help)")
        defaults[action.dest] = checked_value(action, key, value, path)
        action.required = False  # given by the file
    parser.set_defaults(**defaults)
