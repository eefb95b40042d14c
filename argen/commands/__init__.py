"""One module per ``argen`` subcommand, discovered: a new command is one new file in this folder.

A command module defines::

    NAME = "compress"                       # the subcommand
    HELP = "one-line summary for argen --help"
    DESCRIPTION = "..."                     # optional: the paragraph of `argen NAME --help` (default: HELP)
    ORDER = 50                              # optional: its place in `argen --help` (default: after the others)
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(arguments: argparse.Namespace) -> None: ...

Modules without ``NAME`` (``arguments.py``, the shared flags; ``config_file.py``, the --config loader) are helpers.
Command modules import their heavy dependencies inside ``run``, so that ``argen --help`` stays fast.
"""

from __future__ import annotations

from types import ModuleType

from argen.registry import import_modules

# Commands without an ORDER come after the numbered ones, alphabetically.
DEFAULT_ORDER = 1000


def discover() -> list[ModuleType]:
    """Every command module of this package, in `argen --help` order (ORDER, then NAME)."""
    modules = [module for module in import_modules(__name__) if hasattr(module, "NAME")]
    names = [module.NAME for module in modules]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RuntimeError(f"two command modules define NAME = {repeated[0]!r}")
    return sorted(modules, key=lambda module: (getattr(module, "ORDER", DEFAULT_ORDER), module.NAME))
