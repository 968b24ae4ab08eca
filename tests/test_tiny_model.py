"""The tiny model must load and run as a genuine Qwen2.5-VL: same tokenizer, ids and image geometry."""

import hashlib
from dataclasses import replace

import pytest
from PIL import Image

from streamo.protocol import SPECIAL_TOKENS
from streamo.tiny_model import BUILD_RECORD, TinyModelSpec, build_tiny_model, is_built, main

transformers = pytest.importorskip("transformers")


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_loads_as_qwen2_5_vl_and_generates_from_an_image(tiny_model_dir):
    import torch

    processor = transformers.AutoProcessor.from_pretrained(tiny_model_dir)
    model = transformers.AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
    assert tokenizer.convert_tokens_to_ids("<|video_pad|>") == model.config.video_token_id
    assert tokenizer.encode("Hello world") == [9707, 1879]  # the real Qwen2 BPE, not a toy vocabulary

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is here?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    image = Image.new("RGB", (84, 56), (200, 30, 30))  # 3x2 merged patches of 28 pixels
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert (inputs["input_ids"] == model.config.image_token_id).sum().item() == 6
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 4


def test_state_tokens_are_absent_unless_asked_for(tiny_model_dir, tmp_path):
    plain = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    assert all(len(plain.encode(token)) > 1 for token in SPECIAL_TOKENS)

    folder = build_tiny_model(tmp_path / "with-tokens", TinyModelSpec(with_state_tokens=True))
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    ids = [tokenizer.encode(token) for token in SPECIAL_TOKENS]
    assert all(len(token_ids) == 1 for token_ids in ids)
    assert len({token_ids[0] for token_ids in ids}) == 3
    assert max(token_ids[0] for token_ids in ids) < transformers.AutoConfig.from_pretrained(folder).text_config.vocab_size


def test_build_is_seeded_completes_partial_directories_and_is_reused(tiny_model_dir, tmp_path):
    weights = tiny_model_dir / "model.safetensors"
    again = tmp_path / "again"
    again.mkdir()
    (again / "config.json").write_text("{}")  # an interrupted build must not count as complete
    assert not is_built(again)
    build_tiny_model(again)
    assert (again / BUILD_RECORD).is_file()
    assert _digest(again / "model.safetensors") == _digest(weights)

    stamp = (again / "model.safetensors").stat().st_mtime_ns
    assert main([str(again)]) == 0  # complete build: reused, not rewritten
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp

    other_seed = replace(TinyModelSpec(), seed=1)
    assert not is_built(again, other_seed)
    build_tiny_model(again, other_seed)
    assert _digest(again / "model.safetensors") != _digest(weights)


def test_size_options_build_a_different_model_and_defaults_keep_the_default_spec(tmp_path):
    assert main([str(tmp_path / "default")]) == 0
    assert is_built(tmp_path / "default", TinyModelSpec())

    larger = tmp_path / "larger"
    assert main([str(larger), "--hidden-size", "32", "--layers", "3", "--vision-depth", "1", "--rope-theta", "10000"]) == 0
    config = transformers.AutoConfig.from_pretrained(larger)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (32, 3)
    assert config.text_config.rope_parameters["rope_theta"] == 10000
    assert transformers.AutoConfig.from_pretrained(tmp_path / "default").text_config.rope_parameters["rope_theta"] == 1e6
    assert config.vision_config.depth == 1 and config.vision_config.out_hidden_size == 32
    assert not is_built(larger, TinyModelSpec())
    with pytest.raises(SystemExit):
        main([str(tmp_path / "bad"), "--hidden-size", "40"])  # not a multiple of heads x M-RoPE sections


@pytest.mark.parametrize(("name", "parameters", "vision"), [("3b", 3_754_622_976, 668_684_288), ("7b", 8_292_166_656, 676_550_144)])
def test_full_size_configurations_have_the_published_parameter_counts(name, parameters, vision):
    """The random full-size models that GPU benchmarks train are the published architectures,
    down to the parameter count of Qwen2.5-VL-3B/7B-Instruct (built on the meta device: no memory)."""
    import torch

    from streamo.tiny_model import full_config

    with torch.device("meta"):
        model = transformers.Qwen2_5_VLForConditionalGeneration._from_config(full_config(name))
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert sum(p.numel() for p in model.model.visual.parameters()) == vision
    assert model.config.image_token_id == 151655 and model.config.text_config.num_hidden_layers == {"3b": 36, "7b": 28}[name]


def test_full_size_build_refuses_an_unknown_size(tmp_path):
    from streamo.tiny_model import build_full_size_model

    with pytest.raises(ValueError, match="unknown full-size configuration '13b'"):
        build_full_size_model(tmp_path / "m", "13b")
    assert not (tmp_path / "m").exists()
