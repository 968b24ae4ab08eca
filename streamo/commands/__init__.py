"""Every ``streamo`` sub-command, one module each.

A command module defines ``NAME`` and ``add_parser(sub)``, which adds its parser to the
sub-parsers ``sub`` and sets ``handler`` (``args -> exit status``). A new command is one module
plus one entry in ``COMMANDS``, whose order is the order ``streamo --help`` lists them in.
Modules import what their command runs inside the handler, so ``--help`` stays fast.
"""

from __future__ import annotations

from . import client, convert, evaluate, frames, instruct, ovobench, serve, stats, stream, synth, tiny_model, validate

COMMANDS = {module.NAME: module for module in
            (convert, validate, stats, synth, tiny_model, frames, evaluate, ovobench, stream, serve, client, instruct)}
DATA_COMMANDS = (convert.NAME, validate.NAME, stats.NAME)
"""What ``scripts/convert_streaming_video.py`` offers, under the original project's names."""
