"""The one base class of errors that a person fixes by changing arguments or input files.

``streamo`` (``cli.main``) prints any of them as one line, ``PROG: error: MESSAGE``, with exit
status 2. Every other exception is a bug and keeps its traceback, so no command catches a broad
``ValueError`` to turn it into a message.
"""

from __future__ import annotations


class UsageError(Exception):
    """Arguments or inputs that make the command unusable (exit status 2)."""
