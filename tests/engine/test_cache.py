"""GrowingLayer holds exactly what transformers' DynamicLayer holds, through growth and crops."""

import torch
from transformers.cache_utils import DynamicLayer

from streamo.engine.cache import GrowingLayer


def test_growing_layer_matches_dynamic_layer():
    torch.manual_seed(0)
    ours, theirs = GrowingLayer(), DynamicLayer()
    steps = [("add", 100), ("add", 1), ("crop", 7), ("add", 300), ("crop", 250), ("add", 40), ("add", 500)]
    for kind, count in steps:
        if kind == "add":
            keys, values = torch.randn(1, 2, count, 8), torch.randn(1, 2, count, 8)
            got, expected = ours.update(keys, values), theirs.update(keys, values)
            assert all(torch.equal(a, b) for a, b in zip(got, expected))
        else:
            ours.crop(-count)
            theirs.crop(-count)
        assert ours.get_seq_length() == theirs.get_seq_length()
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)
    # Spare room stays bounded: growth is by half the current size, or to what is needed.
    assert ours._key_buffer.shape[-2] < 2 * ours.get_seq_length()
