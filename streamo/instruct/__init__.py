"""Preparing Streamo-Instruct-465K (or any annotation tree in its layout) for training.

``prepare`` finds each record's video under the root given for its source, checks every
distinct video once, converts what can be converted and reports the rest; see
``docs/instruct.md``.
"""

from .prepare import PrepareError, PrepareOptions, prepare
from .report import format_table
from .sources import KNOWN_SOURCES, VideoRoots

__all__ = ["KNOWN_SOURCES", "PrepareError", "PrepareOptions", "VideoRoots", "format_table", "prepare"]
