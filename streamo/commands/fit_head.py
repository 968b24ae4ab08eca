"""``streamo fit-head``: a checkpoint's output head fitted to a few stream conversations (the demo's page model)."""

from __future__ import annotations

from ..fitting import add_arguments, run

NAME = "fit-head"
HELP = "fit a checkpoint's output head to a few stream conversations (a demo model that plays its examples)"
DESCRIPTION = ("Fit the output rows of a checkpoint so that it replies as the chosen stream conversations do over "
               "their own frames, and save the result with a line saying what it is (shown by streamo serve's page).")
__all__ = ["add_arguments", "run"]
