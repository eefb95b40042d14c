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
