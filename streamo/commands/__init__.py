"""Every ``streamo`` sub-command, one module each.

A command module defines ``NAME``, ``HELP``, ``DESCRIPTION`` (and ``ALIASES`` where it has
any), ``add_arguments(parser)`` and ``run(args) -> exit status``. A new command is one module
plus one entry in ``COMMANDS``, whose order is the order ``streamo --help`` lists them in.
Modules import what their command runs inside ``run``, so ``--help`` stays fast.
"""

from __future__ import annotations

from types import ModuleType

from . import client, convert, evaluate, fit_head, frames, instruct, ovobench, serve, stats, stream, synth, tiny_model, validate

COMMANDS: dict[str, ModuleType] = {module.NAME: module for module in
                                   (convert, validate, stats, synth, tiny_model, fit_head, frames, evaluate, ovobench, stream, serve,
                                    client, instruct)}
DATA_COMMANDS = (convert.NAME, validate.NAME, stats.NAME)
"""What ``scripts/convert_streaming_video.py`` offers, under the original project's names."""


def add_parser(sub, name: str) -> None:
    """Add command ``name`` to the sub-parsers ``sub``, its handler set."""
    module = COMMANDS[name]
    parser = sub.add_parser(module.NAME, aliases=list(getattr(module, "ALIASES", ())), help=module.HELP,
                            description=module.DESCRIPTION)
    module.add_arguments(parser)
    parser.set_defaults(handler=module.run)
