"""M-RoPE positions of incremental chunks equal transformers' positions for the whole sequence."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamo.engine import chunk_positions

IMAGE = 151655
TEXT = 1000

pieces = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.integers(1, 5)),
        st.tuples(st.just("image"), st.tuples(st.integers(1, 4), st.integers(1, 4))),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None)
@given(layout=pieces, cuts=st.lists(st.integers(0, 7), max_size=4))
def test_chunked_positions_equal_whole_sequence_rope_index(stream_model, layout, cuts):
    ids, grids, boundaries = [], [], [0]
    for kind, size in layout:
        if kind == "text":
            ids += [TEXT] * size
        else:
            if ids and ids[-1] == IMAGE:
                ids.append(TEXT)  # frames are always wrapped in vision start/end tokens
            ids += [IMAGE] * (size[0] * size[1])
            grids.append(size)
        boundaries.append(len(ids))
    model = stream_model.model.model
    image_grid_thw = torch.tensor([[1, 2 * h, 2 * w] for h, w in grids]) if grids else None
    token_types = torch.tensor([[int(token == IMAGE) for token in ids]])
    if grids:
        expected, _ = model.get_rope_index(torch.tensor([ids]), mm_token_type_ids=token_types, image_grid_thw=image_grid_thw)
        expected = expected[:, 0]
    else:
        expected = torch.arange(len(ids)).expand(3, -1)

    # Split between pieces (frames are never cut), as the engine's per-second chunks are.
    splits = sorted({boundaries[c % len(boundaries)] for c in cuts} | {0, len(ids)})
    chunks, start, frames = [], 0, iter(grids)
    for begin, end in zip(splits, splits[1:]):
        chunk = ids[begin:end]
        chunk_grids = [next(frames) for _ in range(_frame_count(chunk, grids, begin, ids))]
        positions, start = chunk_positions(chunk, IMAGE, chunk_grids, start)
        chunks.append(positions)
    assert torch.equal(torch.cat(chunks, dim=1), expected)
    assert start == int(expected.max()) + 1


def _frame_count(chunk, grids, begin, ids) -> int:
    """Frames that start inside ``chunk`` (a frame's first token follows a non-image token)."""
    count = 0
    for offset, token in enumerate(chunk):
        index = begin + offset
        if token == IMAGE and (index == 0 or ids[index - 1] != IMAGE):
            count += 1
    return count
