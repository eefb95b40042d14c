"""The one exception type for bad input a user can fix.

The CLI prints an `ArgenError` as a single line (`argen: error: ...`) without a traceback; its message says
what was wrong and what to do. Anything else is a bug and shows a traceback with `--debug`.
"""


class ArgenError(Exception):
    """Bad input, a refused checkpoint, a diverged run: something the user can act on."""


class ArgenWarning(UserWarning):
    """Something the user should know that does not stop the work (skipped files, a data directory not used).

    The CLI prints it as one line, ``argen: warning: ...``; with ``--verbose`` (or ``--debug``) in Python's full
    format, with the place that raised it.
    """


def install_hint(extra: str) -> str:
    """The pip command that installs one of argen's extras, as it works where argen runs from.

    From a clone (argen imported from a source tree, editable or on PYTHONPATH: ``pyproject.toml`` sits beside the
    package) ``pip install 'argen[eval]'`` would fetch another argen from the registry, or fail; there the extra is
    ``pip install -e '.[eval]'`` in the clone.
    """
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        return f"pip install -e '.[{extra}]' in {root}"
    return f"pip install 'argen[{extra}]'"
