"""Streamo's ms-swift plugin: the ``stream_qwen2_5_vl`` template, stream datasets and the loss.

This is the only part of Streamo that imports ms-swift. ms-swift loads it through
``--external_plugins plugin/streamo_plugin.py`` (a shim that calls ``register()``), records
that path in the checkpoint's ``args.json``, and imports it again for ``swift infer
--model CKPT``, so a trained checkpoint needs no extra flag.
"""

from __future__ import annotations

from pathlib import Path

PLUGIN_FILE = Path(__file__).resolve().parents[2] / "plugin" / "streamo_plugin.py"
"""The shim to pass to ``--external_plugins`` (in a source checkout)."""


def register() -> None:
    """Register the template, the named example dataset, the stream files of the current
    swift command and the ``stream_focal`` loss, and set up DeepSpeed over CPU ranks
    (``distributed.py``). Safe to call more than once."""
    from . import loss
    from .dataset import register_argument_datasets, register_example_dataset
    from .distributed import prepare_cpu_deepspeed
    from .template import register_stream_template

    register_stream_template()
    register_example_dataset()
    arguments = register_argument_datasets()
    if arguments is not None:
        prepare_cpu_deepspeed(arguments)
    loss.register()
