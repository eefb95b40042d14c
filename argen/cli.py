"""The ``argen`` command: one subcommand per module of `argen.commands`, discovered (see that package).

Errors a user can fix (`ArgenError`) print as one line, ``argen: error: ...``; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from argen import __version__
from argen.allocator import keep_freed_memory
from argen.commands import discover
from argen.commands.config_file import apply_config
from argen.errors import ArgenError, ArgenWarning


def build_parser() -> argparse.ArgumentParser:
    """The ``argen`` parser with every subcommand."""
    return build_parsers()[0]


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``argen`` parser and each subcommand's parser by name (the --config loader fills one of those)."""
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
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    parsers: dict[str, argparse.ArgumentParser] = {}
    for module in discover():  # argen/commands/<name>.py, one module per command
        command = subparsers.add_parser(
            module.NAME, parents=[common], help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
        parsers[module.NAME] = command
    return parser, parsers


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed, a --config file's values filled in; ``handler`` is None when no command was given."""
    parser, parsers = build_parsers()
    apply_config(argv, parsers)
    arguments = parser.parse_args(argv)
    if getattr(arguments, "handler", None) is None:
        parser.print_help()
        arguments.handler = None
    return arguments


def run(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the command; errors propagate (for tests and library use)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    arguments = parse_arguments(argv)
    if arguments.handler is None:
        return
    arguments.argv = argv  # what produced a result (argen bench records it)
    arguments.handler(arguments)


@contextmanager
def one_line_warnings(*, verbose: bool) -> Iterator[None]:
    """Show argen's own warnings (`ArgenWarning`) as ``argen: warning: ...`` lines; others, and all of them with
    ``verbose``, in Python's format with the file and line that raised them."""
    python_format = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, ArgenWarning) and not verbose:
            print(f"argen: warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)
        else:
            python_format(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = python_format


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors and warnings, exit codes 1 (error) and 130 (Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    keep_freed_memory()  # large tensors reuse freed memory instead of page-faulting through fresh memory each step
    try:
        with one_line_warnings(verbose=debug or "--verbose" in argv):
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
