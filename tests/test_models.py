import json

import pytest
import torch

from mosr.errors import ConfigError, ModelLoadError
from mosr.models import (
    ADAPTER_META,
    attach_adapter,
    check_layers,
    encode_chat_pair,
    find_layers,
    format_prompt,
    load_model,
)
from mosr.testing import save_tiny_model, tiny_model


def test_format_prompt_uses_chat_template_and_prefix(tiny):
    text = format_prompt(tiny.tokenizer, "hello", system="be nice", response_prefix="Sure")
    assert text == "<|im_start|>system\nbe nice<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nSure"


def test_format_prompt_without_template_fails(tiny):
    tok = tiny.tokenizer.__class__(tokenizer_object=tiny.tokenizer.backend_tokenizer)
    with pytest.raises(ConfigError, match="chat template"):
        format_prompt(tok, "hi")


def test_encode_chat_pair_prompt_length(tiny):
    tok = tiny.tokenizer
    ids, n_prompt = encode_chat_pair(tok, "hello", "world")
    prompt_ids = tok(format_prompt(tok, "hello"), add_special_tokens=False)["input_ids"]
    assert ids[:n_prompt] == prompt_ids
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == "world"


def test_find_layers_plain_and_peft(tiny):
    from peft import LoraConfig, get_peft_model

    layers = find_layers(tiny.model)
    assert len(layers) == 4 and layers is tiny.model.model.layers
    peft_model = get_peft_model(tiny_model().model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert len(find_layers(peft_model)) == 4


def test_find_layers_fallback_and_error():
    class Block(torch.nn.Module):
        pass

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = torch.nn.ModuleList([Block() for _ in range(3)])

    assert len(find_layers(Odd())) == 3
    with pytest.raises(ConfigError, match="decoder layers"):
        find_layers(torch.nn.Linear(2, 2))


def test_two_checkpoints_of_one_architecture_are_told_apart_and_old_adapters_still_load(tmp_path):
    from mosr.model_identity import local_fingerprint, same_base

    a = save_tiny_model(tmp_path / "a", seed=0)
    b = save_tiny_model(tmp_path / "b", seed=1)
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()  # same architecture
    fa, fb = local_fingerprint(a), local_fingerprint(b)
    assert fa != fb and fa == local_fingerprint(a)
    assert fa.split(";")[0] == fb.split(";")[0]  # the config part alone could not tell them apart
    assert same_base(fa.split(";")[0], fa)  # an adapter recorded with the config hash only still loads
    assert not same_base(fb, fa)


def test_check_layers(tiny):
    assert check_layers(tiny.model, [0, -1]) == [0, 3]
    with pytest.raises(ConfigError, match="out of range: the model has 4"):
        check_layers(tiny.model, [4])


def test_load_local_folder_roundtrip(tmp_path, tiny):
    folder = save_tiny_model(tmp_path / "m")
    loaded = load_model(str(folder))
    assert loaded.fingerprint.startswith("local-config-sha256:")
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(x).logits, tiny_model().model(x).logits, atol=1e-6)


def test_corrupt_gguf_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MOSR_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_model(str(bad))
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "missing.gguf"))
    assert not (tmp_path / "cache" / "gguf").exists() or not any((tmp_path / "cache" / "gguf").iterdir())


def test_truncated_gguf_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MOSR_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x01" * 20)
    with pytest.raises(ModelLoadError, match="cannot read GGUF"):
        load_model(str(bad))


def _save_adapter(model, folder, base_fingerprint, r=2):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, target_modules=["q_proj"]))
    peft_model.save_pretrained(str(folder))
    (folder / ADAPTER_META).write_text(json.dumps({"base_spec": "tiny", "base_fingerprint": base_fingerprint}))


def test_adapter_for_another_model_is_refused(tmp_path):
    other = tiny_model(hidden_size=64)
    _save_adapter(other.model, tmp_path / "a", other.fingerprint)
    with pytest.raises(ModelLoadError, match="trained on base model"):
        attach_adapter(tiny_model(), tmp_path / "a")
    # Without mosr metadata, the shape mismatch itself is reported as a one-line error.
    (tmp_path / "a" / ADAPTER_META).unlink()
    with pytest.raises(ModelLoadError, match="does not fit model"):
        attach_adapter(tiny_model(), tmp_path / "a")


def test_adapter_roundtrip(tmp_path):
    base = tiny_model()
    _save_adapter(tiny_model().model, tmp_path / "a", base.fingerprint)
    loaded = attach_adapter(base, tmp_path / "a")
    assert loaded.adapter == str(tmp_path / "a")
    with pytest.raises(ModelLoadError, match="not a LoRA adapter"):
        attach_adapter(tiny_model(), tmp_path)
