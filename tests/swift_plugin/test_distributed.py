"""When the plugin sets up DeepSpeed over CPU ranks, and when it leaves everything to accelerate.

The setting up itself runs in tests/swift_plugin/test_multirank.py (ZeRO-2 and ZeRO-3 on 2 ranks)."""

from types import SimpleNamespace

import pytest

from streamo.swift_plugin.distributed import prepare_cpu_deepspeed


@pytest.mark.parametrize("arguments, world_size", [
    (SimpleNamespace(deepspeed=None, use_cpu=False), "2"),  # plain DDP: train.sh passes --use_cpu
    (SimpleNamespace(deepspeed="configs/ds_zero2.json", use_cpu=False), "1"),  # one process
    (SimpleNamespace(deepspeed="configs/ds_zero2.json", use_cpu=True), "2"),  # the user chose CPU DDP
])
def test_nothing_is_set_up_where_accelerate_needs_no_help(arguments, world_size, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", world_size)
    assert prepare_cpu_deepspeed(arguments) is None
    assert not hasattr(arguments, "accelerator_config")
