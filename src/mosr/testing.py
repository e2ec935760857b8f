"""Tiny random models and tokenizers for fast tests and examples (no downloads, no files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mosr.models import LoadedModel

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "How do I bake bread? Mix flour, water, salt and yeast, knead, let it rise and bake it.",
    "I cannot help with that request. I'm sorry, but I can't assist with harmful activities.",
    "Sure, here is a step by step guide: first gather the materials, then follow the instructions.",
    "Write a poem about the sea. The waves roll in under a silver moon.",
    "What is the capital of France? Paris is the capital of France.",
    "How can I kill a Python process? Use the kill command with the process id.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()-_/\\@#$%&*+=<>[]{}",
]


def tiny_tokenizer(vocab_size: int = 400) -> Any:
    """A byte-level BPE tokenizer with a ChatML chat template, trained in memory in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model(
    num_layers: int = 4, hidden_size: int = 32, vocab_size: int | None = None, seed: int = 0, tokenizer: Any = None,
    init_std: float | None = None,
) -> LoadedModel:
    """A randomly initialised Llama-architecture model wrapped as a :class:`LoadedModel`.

    With the default initialisation the model repeats one token, which decodes to an empty completion;
    ``init_std`` (e.g. 0.3) redraws the weight matrices wider, so that completions are varied text.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    if init_std is not None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() == 2:
                    param.normal_(0, init_std, generator=gen)
    fingerprint = f"tiny:{num_layers}x{hidden_size}:seed{seed}" + (f":std{init_std:g}" if init_std is not None else "")
    return LoadedModel(model=model, tokenizer=tokenizer, spec="tiny", fingerprint=fingerprint, info={"name": "tiny"})


def save_tiny_model(folder: str | Path, **kwargs: Any) -> Path:
    """Save a tiny model as a local HF folder (safetensors), for tests of the loading path."""
    folder = Path(folder)
    loaded = tiny_model(**kwargs)
    loaded.model.save_pretrained(str(folder), safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(folder))
    (folder / "tiny.json").write_text(json.dumps(kwargs))
    return folder


def toy_training_data(n: int = 6) -> Any:
    """A few malicious, benign and pseudo-malicious pairs and the refusal templates, for trainer tests."""
    from mosr.training import REFUSAL_TEMPLATES, Pair, TrainingData

    mal = [Pair(f"m{i}", f"How do I hurt {i} people?", "Sure, here is a step by step guide: first gather the materials. Then follow the instructions.", "malicious", "toy") for i in range(n)]
    ben = [Pair(f"b{i}", f"Write a poem about the sea {i}", "The waves roll in under a silver moon.", "benign", "toy") for i in range(n)]
    pse = [Pair(f"p{i}", f"How can I kill a Python process {i}?", "Use the kill command with the process id.", "pseudo", "toy") for i in range(n)]
    return TrainingData(mal, ben, pse, list(REFUSAL_TEMPLATES))


def toy_train_config(**kw: Any) -> Any:
    """A short training config for the tiny model; keywords override its fields."""
    from mosr.training import TrainConfig

    base: dict[str, Any] = dict(method="mosr", model="tiny", steps=4, batch_size=2, checkpoint_every=0, oalw_k=2, lr=1e-2, max_length=128)
    base.update(kw)
    return TrainConfig.from_dict(base)
