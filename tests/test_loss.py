"""The stream_focal loss maths, checked against a naive full-softmax reference."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from streamo.loss import (
    IGNORE_INDEX,
    RunningStateAlpha,
    count_states_in_messages,
    shift_left,
    state_alpha_from_counts,
    state_alpha_from_files,
    state_counts,
    stream_focal_loss,
)
from streamo.protocol import State, assistant_text, user_text

STATE_IDS = (3, 5, 7)  # Silence, Standby, Response in a toy vocabulary
VOCAB = 13


def naive_focal_loss(logits, labels, state_ids, alpha, gamma, num_items_in_batch=None):
    """Textbook version: full fp32 softmax over every position, then a second softmax for p_t."""
    z = logits[..., :-1, :].reshape(-1, logits.shape[-1]).to(torch.promote_types(logits.dtype, torch.float32))
    targets = labels[..., 1:].reshape(-1)
    supervised = targets != IGNORE_INDEX
    safe = targets.clamp_min(0)
    ce = F.cross_entropy(z, safe, reduction="none")
    p = torch.softmax(z, dim=-1).gather(1, safe[:, None]).squeeze(1)
    weight = torch.ones_like(ce)
    power = torch.zeros_like(ce)
    for state_id, state_alpha in zip(state_ids, alpha):
        weight = torch.where(targets == state_id, torch.full_like(ce, state_alpha), weight)
        power = torch.where(targets == state_id, torch.full_like(ce, gamma), power)
    per_token = weight * (1 - p) ** power * ce
    denominator = supervised.sum().clamp_min(1) if num_items_in_batch is None else num_items_in_batch
    return (per_token * supervised).sum() / denominator


def random_batch(batch=2, length=9, vocab=VOCAB, ignore_share=0.3, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(batch, length, vocab, generator=generator)).to(dtype)
    # Bias towards the state tokens so that every class occurs.
    labels = torch.tensor(STATE_IDS)[torch.randint(0, 3, (batch, length), generator=generator)]
    text = torch.rand(batch, length, generator=generator) < 0.3
    labels[text] = torch.randint(0, vocab, (int(text.sum()),), generator=generator)
    labels[torch.rand(batch, length, generator=generator) < ignore_share] = IGNORE_INDEX
    labels[:, 0] = IGNORE_INDEX
    return logits.requires_grad_(), labels


def loss_and_grad(fn, logits, labels, **kwargs):
    logits = logits.detach().requires_grad_()
    loss = fn(logits, labels, **kwargs)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad


def one_position(logits_row: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-position sequence whose only supervised prediction is ``logits_row -> target``."""
    logits = torch.stack([logits_row, torch.zeros_like(logits_row)])[None]
    labels = torch.tensor([[IGNORE_INDEX, target]])
    return logits, labels


# --- focal weighting -------------------------------------------------------------------------


@pytest.mark.parametrize("state_index", range(3))
def test_state_token_gets_alpha_times_focal_factor(state_index):
    row = torch.linspace(-2, 2, VOCAB)
    target = STATE_IDS[state_index]
    logits, labels = one_position(row, target)
    alpha, gamma = (0.4, 1.7, 3.1), 2.0
    p = torch.softmax(row.double(), -1)[target]
    expected = alpha[state_index] * (1 - p) ** gamma * -torch.log(p)
    loss = stream_focal_loss(logits, labels, STATE_IDS, alpha, gamma)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_text_token_keeps_plain_cross_entropy():
    row = torch.linspace(-2, 2, VOCAB)
    logits, labels = one_position(row, 1)
    loss = stream_focal_loss(logits, labels, STATE_IDS, (9.0, 9.0, 9.0), gamma=4.0)
    assert loss.item() == pytest.approx(F.cross_entropy(row[None], torch.tensor([1])).item(), rel=1e-6)


def test_confident_state_prediction_is_down_weighted_more_than_an_uncertain_one():
    target = STATE_IDS[0]
    confident = torch.zeros(VOCAB)
    confident[target] = 6.0
    uncertain = torch.zeros(VOCAB)
    ratios = []
    for row in (confident, uncertain):
        logits, labels = one_position(row, target)
        focal = stream_focal_loss(logits, labels, STATE_IDS, (1, 1, 1), gamma=2.0)
        plain = stream_focal_loss(logits, labels, STATE_IDS, (1, 1, 1), gamma=0.0)
        ratios.append((focal / plain).item())
    assert ratios[0] < 0.01 < 0.8 < ratios[1] < 1.0


def test_reduces_to_cross_entropy_with_gamma_zero_and_unit_alpha():
    logits, labels = random_batch(batch=3, length=11)
    loss = stream_focal_loss(logits, labels, STATE_IDS, (1.0, 1.0, 1.0), gamma=0.0)
    reference = F.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


# --- ignored positions -------------------------------------------------------------------------


def test_positions_without_a_label_do_not_contribute():
    logits, labels = random_batch(ignore_share=0.5)
    targets = shift_left(labels)
    loss, grad = loss_and_grad(stream_focal_loss, logits, labels, state_token_ids=STATE_IDS, alpha=(1, 2, 3))
    changed = logits.detach().clone()
    changed[targets == IGNORE_INDEX] += 100 * torch.randn_like(changed[targets == IGNORE_INDEX])
    assert stream_focal_loss(changed, labels, STATE_IDS, (1, 2, 3)).item() == pytest.approx(loss.item(), rel=1e-6)
    assert torch.all(grad[targets == IGNORE_INDEX] == 0)
    assert torch.all(grad[targets != IGNORE_INDEX].abs().sum(-1) > 0)


def test_fully_ignored_batch_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(2, 5, VOCAB, requires_grad=True)
    labels = torch.full((2, 5), IGNORE_INDEX)
    loss = stream_focal_loss(logits, labels, STATE_IDS, num_items_in_batch=7)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(logits.grad == 0)


# --- normalisation, gradient accumulation, padding-free ----------------------------------------


def test_num_items_in_batch_replaces_the_local_token_count():
    logits, labels = random_batch()
    supervised = int((labels[:, 1:] != IGNORE_INDEX).sum())
    mean = stream_focal_loss(logits, labels, STATE_IDS, (0.5, 2, 4))
    summed = stream_focal_loss(logits, labels, STATE_IDS, (0.5, 2, 4), num_items_in_batch=torch.tensor(1))
    global_count = stream_focal_loss(logits, labels, STATE_IDS, (0.5, 2, 4), num_items_in_batch=3 * supervised)
    assert summed.item() == pytest.approx(mean.item() * supervised, rel=1e-6)
    assert global_count.item() == pytest.approx(mean.item() / 3, rel=1e-6)


def test_gradient_accumulation_equals_one_big_batch():
    logits, labels = random_batch(batch=4, length=10, seed=3)
    kwargs = dict(state_token_ids=STATE_IDS, alpha=(0.3, 1.5, 4.0), gamma=2.0)
    big_loss, big_grad = loss_and_grad(stream_focal_loss, logits, labels, **kwargs)
    # The trainer passes each micro-batch the supervised-token count of the whole step.
    total = (labels[:, 1:] != IGNORE_INDEX).sum()
    micro = [loss_and_grad(stream_focal_loss, logits[i : i + 2], labels[i : i + 2], num_items_in_batch=total, **kwargs) for i in (0, 2)]
    assert sum(loss for loss, _ in micro).item() == pytest.approx(big_loss.item(), rel=1e-6)
    torch.testing.assert_close(torch.cat([grad for _, grad in micro]), big_grad, rtol=1e-5, atol=1e-7)


def test_padding_free_row_equals_the_padded_batch():
    kwargs = dict(state_token_ids=STATE_IDS, alpha=(0.3, 1.5, 4.0), gamma=2.0)
    lengths = (6, 9, 4)
    samples = [random_batch(batch=1, length=n, seed=n) for n in lengths]
    # Padded batch: right padding with ignored labels (logits there are arbitrary).
    width = max(lengths)
    padded_logits = torch.randn(len(lengths), width, VOCAB)
    padded_labels = torch.full((len(lengths), width), IGNORE_INDEX)
    for index, (logits, labels) in enumerate(samples):
        padded_logits[index, : labels.shape[1]] = logits[0].detach()
        padded_labels[index, : labels.shape[1]] = labels[0]
    # Packed row: every sample's first label is ignored, as ms-swift encodes it.
    packed_logits = torch.cat([logits.detach() for logits, _ in samples], dim=1)
    packed_labels = torch.cat([labels for _, labels in samples], dim=1)
    padded_loss, padded_grad = loss_and_grad(stream_focal_loss, padded_logits, padded_labels, **kwargs)
    packed_loss, packed_grad = loss_and_grad(stream_focal_loss, packed_logits, packed_labels, **kwargs)
    assert packed_loss.item() == pytest.approx(padded_loss.item(), rel=1e-6)
    offsets = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    for index, n in enumerate(lengths):
        torch.testing.assert_close(packed_grad[0, offsets[index] : offsets[index + 1]], padded_grad[index, :n])


def test_shifted_labels_give_the_same_loss():
    logits, labels = random_batch()
    unshifted = stream_focal_loss(logits, labels, STATE_IDS, (1, 2, 3))
    shifted = stream_focal_loss(logits, shift_left(labels), STATE_IDS, (1, 2, 3), labels_shifted=True)
    assert shifted.item() == pytest.approx(unshifted.item(), rel=1e-7)


def test_token_scale_multiplies_each_token_loss():
    logits, labels = random_batch()
    scale = torch.rand(labels.shape) * 3
    scaled = stream_focal_loss(logits, labels, STATE_IDS, (1, 2, 3), token_scale=scale)
    expected_terms = []
    for b in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            if labels[b, t] == IGNORE_INDEX:
                continue
            single = torch.full_like(labels, IGNORE_INDEX)
            single[b, t] = labels[b, t]
            expected_terms.append(scale[b, t] * stream_focal_loss(logits, single, STATE_IDS, (1, 2, 3)))
    supervised = int((labels[:, 1:] != IGNORE_INDEX).sum())
    assert scaled.item() == pytest.approx((sum(expected_terms) / supervised).item(), rel=1e-5)


# --- gradients against the naive reference -----------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_gradcheck_in_float64(gamma):
    logits, labels = random_batch(batch=2, length=5, vocab=9, dtype=torch.float64)
    labels[labels >= 9] = 1
    # A tiny chunk size makes the chunk loop run several times.
    assert torch.autograd.gradcheck(
        lambda x: stream_focal_loss(x, labels, STATE_IDS, (0.5, 2.0, 3.0), gamma, chunk_elements=18),
        (logits,),
    )


@pytest.mark.parametrize("chunk_elements", [VOCAB, 1 << 20])
def test_kept_logits_give_the_loss_and_gradient_of_the_full_logits(chunk_elements):
    """ms-swift's ``logits_to_keep`` hands over only the rows that predict a label (plus the
    last one) and the labels compacted to match: the result must not change."""
    logits, labels = random_batch(batch=1, length=20, ignore_share=0.5, seed=3)
    kwargs = dict(state_token_ids=STATE_IDS, alpha=(0.5, 2.0, 3.0), gamma=1.0, chunk_elements=chunk_elements)
    full_loss, full_grad = loss_and_grad(stream_focal_loss, logits, labels, **kwargs)
    supervised = labels[0] != IGNORE_INDEX
    keep = F.pad(supervised[1:], (0, 1), value=True)
    kept_labels = F.pad(labels[:, supervised], (1, 0), value=IGNORE_INDEX)
    kept_loss, kept_grad = loss_and_grad(stream_focal_loss, logits[:, keep], kept_labels, **kwargs)
    torch.testing.assert_close(kept_loss, full_loss)
    torch.testing.assert_close(kept_grad, full_grad[:, keep])


def test_gradcheck_when_every_row_is_supervised():
    logits, labels = random_batch(batch=1, length=6, vocab=9, ignore_share=0.0, dtype=torch.float64, seed=5)
    labels[labels >= 9] = 1
    assert torch.autograd.gradcheck(
        lambda x: stream_focal_loss(x, labels, STATE_IDS, (0.5, 2.0, 3.0), 1.5, chunk_elements=18), (logits,)
    )


@pytest.mark.parametrize("chunk_elements", [VOCAB, 5 * VOCAB, 1 << 20])
def test_loss_and_gradient_equal_the_naive_full_softmax(chunk_elements):
    logits, labels = random_batch(batch=3, length=12, seed=7)
    kwargs = dict(alpha=(0.25, 1.5, 3.0), gamma=2.0, num_items_in_batch=50)
    ours = loss_and_grad(stream_focal_loss, logits, labels, state_token_ids=STATE_IDS, chunk_elements=chunk_elements, **kwargs)
    naive = loss_and_grad(naive_focal_loss, logits, labels, state_ids=STATE_IDS, **kwargs)
    torch.testing.assert_close(ours[0], naive[0])
    torch.testing.assert_close(ours[1], naive[1])


def test_bfloat16_logits_are_computed_in_float32():
    logits, labels = random_batch(batch=2, length=16, vocab=64, dtype=torch.bfloat16, seed=11)
    ours = loss_and_grad(stream_focal_loss, logits, labels, state_token_ids=STATE_IDS, alpha=(0.5, 1, 2))
    naive = loss_and_grad(naive_focal_loss, logits, labels, state_ids=STATE_IDS, alpha=(0.5, 1, 2), gamma=2.0)
    assert ours[0].dtype == torch.float32 and ours[1].dtype == torch.bfloat16
    torch.testing.assert_close(ours[0], naive[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours[1].float(), naive[1].float(), rtol=1e-2, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(2, 8),
    vocab=st.integers(8, 20),
    gamma=st.floats(0.0, 4.0),
    alpha=st.tuples(*[st.floats(0.05, 8.0)] * 3),
    ignore_share=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
)
def test_matches_naive_reference_on_random_batches(batch, length, vocab, gamma, alpha, ignore_share, seed):
    logits, labels = random_batch(batch, length, vocab, ignore_share, torch.float64, seed)
    ours = loss_and_grad(stream_focal_loss, logits, labels, state_token_ids=STATE_IDS, alpha=alpha, gamma=gamma, chunk_elements=2 * vocab)
    naive = loss_and_grad(naive_focal_loss, logits, labels, state_ids=STATE_IDS, alpha=alpha, gamma=gamma)
    torch.testing.assert_close(ours[0], naive[0])
    torch.testing.assert_close(ours[1], naive[1])


def test_saturated_predictions_stay_finite():
    row = torch.full((VOCAB,), -50.0)
    row[STATE_IDS[1]] = 50.0
    for gamma in (0.3, 2.0):
        logits, labels = one_position(row, STATE_IDS[1])
        logits.requires_grad_()
        loss = stream_focal_loss(logits, labels, STATE_IDS, (1, 1, 1), gamma)
        loss.backward()
        assert math.isfinite(loss.item()) and torch.isfinite(logits.grad).all()


def test_rejects_bad_arguments():
    logits, labels = random_batch()
    with pytest.raises(ValueError, match="three distinct"):
        stream_focal_loss(logits, labels, (3, 3, 5))
    with pytest.raises(ValueError, match="gamma"):
        stream_focal_loss(logits, labels, STATE_IDS, gamma=-1.0)
    with pytest.raises(ValueError, match="do not match"):
        stream_focal_loss(logits, labels[:, :-1], STATE_IDS)
    with pytest.raises(ValueError, match="one value per state"):
        stream_focal_loss(logits, labels, STATE_IDS, alpha=(1.0, 2.0))


# --- alpha from class frequencies --------------------------------------------------------------


def test_inverse_frequency_alpha_balances_the_states():
    counts = {State.SILENCE: 900, State.STANDBY: 80, State.RESPONSE: 20}
    alpha = state_alpha_from_counts(counts)
    totals = [alpha[i] * n for i, n in enumerate(counts.values())]
    assert totals == pytest.approx([totals[0]] * 3)
    # Mean weight of a state token over the dataset is 1.
    assert sum(totals) / sum(counts.values()) == pytest.approx(1.0)
    assert alpha[0] < 1 < alpha[1] < alpha[2]


def test_alpha_power_tempers_the_balance():
    counts = {"silence": 900, "standby": 80, "response": 20}
    assert state_alpha_from_counts(counts, power=0.0) == pytest.approx((1.0, 1.0, 1.0))
    full, half = state_alpha_from_counts(counts, 1.0), state_alpha_from_counts(counts, 0.5)
    assert full[2] / full[0] == pytest.approx(45.0)
    assert half[2] / half[0] == pytest.approx(math.sqrt(45.0))


def test_alpha_for_missing_states_and_empty_counts():
    alpha = state_alpha_from_counts((30, 0, 10))
    assert alpha[1] == 1.0
    assert alpha[0] * 30 == pytest.approx(alpha[2] * 10)
    assert state_alpha_from_counts((0, 0, 0)) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        state_alpha_from_counts((1, -2, 3))
    with pytest.raises(ValueError):
        state_alpha_from_counts((1, 2, 3), power=-1)


def _conversation(states):
    messages = [{"role": "system", "content": "s"}]
    for turn, state in enumerate(states):
        messages.append({"role": "user", "content": user_text(turn)})
        messages.append({"role": "assistant", "content": assistant_text(state, "answer")})
    return {"messages": messages}


def test_alpha_from_stream_files_counts_every_file(tmp_path):
    s, b, r = State.SILENCE, State.STANDBY, State.RESPONSE
    first = tmp_path / "a.jsonl"
    first.write_text(json.dumps(_conversation([s, s, s, b, r])) + "\n" + json.dumps(_conversation([s, s, r])) + "\n")
    second = tmp_path / "b.json"
    second.write_text(json.dumps([_conversation([s, b, b, r])]))
    counts = {s: 6, b: 3, r: 3}
    assert state_alpha_from_files([first, second]) == pytest.approx(state_alpha_from_counts(counts))


def test_alpha_from_files_without_states_is_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no state tokens"):
        state_alpha_from_files([empty])


def test_count_states_in_messages_reads_assistant_turns_only():
    conversation = _conversation([State.SILENCE, State.RESPONSE, State.SILENCE])
    conversation["messages"].append({"role": "user", "content": "</Response> not a reply"})
    assert count_states_in_messages(conversation["messages"]) == {State.SILENCE: 2, State.RESPONSE: 1}


def test_running_alpha_converges_to_the_dataset_alpha():
    running = RunningStateAlpha(prior=1.0)
    assert running.alpha() == pytest.approx((1.0, 1.0, 1.0))
    for _ in range(50):
        running.update(torch.tensor([18, 3, 1]))
    assert running.alpha() == pytest.approx(state_alpha_from_counts((901, 151, 51)))
    assert running.alpha() == pytest.approx(state_alpha_from_counts((18, 3, 1)), rel=0.05)


def test_state_counts_counts_each_state_token():
    labels = torch.tensor([[IGNORE_INDEX, 3, 3, 1, 7], [IGNORE_INDEX, 5, 3, IGNORE_INDEX, 7]])
    assert state_counts(labels, STATE_IDS).tolist() == [3, 1, 2]
