"""Training configuration: one dataclass, loadable from YAML, overridable with ``key=value``.

Precedence: defaults, then the YAML file, then ``--set key=value`` / flags. Unknown keys and
out-of-range values fail with a one-line :class:`~mosr.errors.ConfigError` that names the key.
Checks that need the model (layer indices against its depth) run in :meth:`TrainConfig.check_model`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mosr.config import check_types, from_mapping, read_yaml, union_args
from mosr.errors import ConfigError
from mosr.methods import TRAINED, VARIANTS, Method

Pooling = Literal["last_prompt", "mean_prompt", "mean_all"]
SimilarityKind = Literal["knn", "centroid", "max"]
Sign = Literal["less", "more"]
Normalize = Literal["global", "batch"]
TokenScope = Literal["all", "content", "response", "response_and_last_prompt"]
RepNorm = Literal["none", "standardize", "unit"]
AnswerSource = Literal["reference", "own"]
PrefixUnit = Literal["tokens", "sentences"]
OalwReference = Literal["compliant", "all"]


MethodSpec = Method  # the registry's spec (mosr.methods), under its older name
METHODS = TRAINED  # trained methods by name; VARIANTS: named settings of one (live views of the registry)


def layer_variant(lower: dict[str, Any], upper: dict[str, Any]) -> dict[str, Any]:
    """``lower`` updated with ``upper``; a variant named in ``upper`` brings its settings in between."""
    variant = VARIANTS.get(str(upper.get("method")))
    return {**lower, **(variant.overrides if variant else {}), **upper}


def resolve_method(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with a variant name in ``method`` replaced by its base method under the variant's overrides."""
    variant = VARIANTS.get(str(data.get("method")))
    if variant is None:
        return dict(data)
    return {**variant.overrides, **data, "method": variant.base}


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    """Everything a training run depends on. Stored in ``run.json`` and ``mosr_adapter.json``."""

    method: str = _f("mosr", "training method: " + ", ".join(METHODS) + "; or a variant: " + ", ".join(VARIANTS))
    model: str = _f("default", "base model spec (default, hub id, local folder or .gguf)")
    seed: int = _f(0, "seed for LoRA init, batch sampling, CAA prefix lengths and dropout")

    # data
    pair_datasets: list[str] = _f(["derta"], "harmful prompt + reference harmful response pairs (erase set)")
    harmful_datasets: list[str] = _f(
        ["harmful-instructions:train", "advbench:train"], "harmful prompts completed by the base model itself (erase set)"
    )
    retain_datasets: list[str] = _f(["self-instruct:train"], "benign instructions (retain set)")
    retain_answers: AnswerSource = _f("reference", "retain answers: dataset reference answers or the model's own")
    pseudo_datasets: list[str] = _f(["or-bench-hard:train"], "pseudo-malicious prompts, answered by the base model")
    max_pairs: int | None = _f(None, "cap on pair_datasets samples (None = all)")
    max_harmful: int | None = _f(64, "cap on harmful prompts to complete with the base model (None = all)")
    max_retain: int | None = _f(None, "cap on retain samples (None = all)")
    max_pseudo: int | None = _f(96, "cap on pseudo-malicious prompts: the size of the pseudo-malicious (boundary-safe) pool "
                                 "(None = all of pseudo_datasets, e.g. all of or-bench-hard:train)")
    own_max_new_tokens: int = _f(48, "tokens generated per own completion (cached on disk)")
    gen_batch_size: int = _f(32, "batch size for generating own completions")
    max_length: int = _f(128, "max tokens per training sequence (prompt + response)")
    refusal_templates: str | None = _f(None, "text file with one refusal per line (None = built-in templates)")
    leak_threshold: float = _f(0.85, "near-duplicate threshold of the leak check against evaluation sets")
    leak_check_val: bool = _f(True, "the leak check also covers the :val splits settings are chosen on (advbench, "
                              "harmful-instructions, or-bench-hard, self-instruct); false = test and eval-only sets only, "
                              "as runs made before this key existed")
    data_judge: str = _f("default", "judge (mosr.judges.get_judge) that sorts the base model's own completions: harmful ones it "
                         "calls refusal leave the erase set; pseudo-malicious ones enter only if it calls them compliance")

    # representation rerouting (METHOD §4)
    target_layers: list[int] | None = _f(None, "layers L_t of the erase/retain losses (None = 1/3 and 2/3 of depth)")
    alpha: float = _f(10.0, "schedule scale: c_ret = a*t/(2T), c_erase = a*(1 - t/(2T))")
    retain_scale: float = _f(1.0, "multiplier on c_ret: balances the retain distance against the erase cosine (see docs/TRAINING.md)")
    erase_tokens: TokenScope = _f("content", "tokens of a malicious sample that enter the erase loss: all; content = all but the "
                                   "chat-template prefix every prompt shares (system prompt, role header); response; "
                                   "response_and_last_prompt = the response plus the last prompt token (where the answer is decided)")
    retain_tokens: TokenScope = _f("all", "tokens of a retain sample that enter the retain loss")
    rep_norm: RepNorm = _f("unit", "representation normalisation of the erase/retain/OALW terms: standardize = (h - mean)/std "
                           "per layer and dimension (reference model, before training); unit = the same divided by sqrt(D); none = raw h")
    rep_norm_rows: int = _f(16, "rows (half erase, half retain) used to estimate the rep_norm statistics")
    skip_first_token: bool = _f(True, "leave the first token (attention sink) out of the erase/retain tokens and the statistics")
    truncate: bool = _f(True, "drop decoder blocks after max(target_layers) while computing the representation losses")

    # LoRA
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(16, "LoRA alpha")
    lora_dropout: float = _f(0.05, "LoRA dropout")
    lora_b_init_std: float = _f(0.0, "std of a seeded Gaussian start for LoRA B (0 = peft's zero start: the adapter begins as "
                                     "the identity, where the erase cosine has zero gradient; see docs/TRAINING.md)")
    lora_modules: list[str] = _f(["all-linear"], "peft target_modules (module names, or all-linear)")
    lora_layers: list[int] | None = _f(None, "decoder blocks that get LoRA (None = 0..max(target_layers))")

    # optimisation
    steps: int = _f(40, "optimizer steps T")
    stop_after: int | None = _f(None, "end the run after this many steps of the `steps` schedule and save its adapter there: a "
                                "point of a step frontier, trained alone (None = all steps)")
    batch_size: int = _f(2, "rows per role (erase, retain, refusal, boundary-safe, compliance) per step and process")
    lr: float = _f(1e-3, "AdamW learning rate")
    warmup_steps: int = _f(0, "linear warm-up steps")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping (0 = off)")
    checkpoint_every: int = _f(20, "save adapter + optimizer + step every N steps (0 = only at the end)")
    keep_checkpoints: int = _f(2, "how many checkpoints to keep")

    # OALW (METHOD §5)
    oalw_layer: int | None = _f(None, "layer l* of the OALW features (None = first target layer)")
    oalw_pooling: Pooling = _f("last_prompt", "pooling of the OALW features")
    oalw_similarity: SimilarityKind = _f("knn", "similarity to the pseudo-malicious set: knn mean, centroid or max cosine")
    oalw_k: int = _f(8, "neighbours for knn similarity")
    oalw_reference: OalwReference = _f("compliant", "pseudo-malicious prompts the similarity is measured to: compliant = the "
                                       "pool trained on (base-model answers data_judge calls compliance); all = every "
                                       "pseudo-malicious prompt, as METHOD §5 says")
    oalw_tau: float = _f(0.05, "softmax temperature of the weights")
    oalw_sign: Sign = _f("less", "less: overlapping samples are erased less (paper); more: the reverse")
    oalw_normalize: Normalize = _f("global", "global: sum w*l / B (weights have dataset mean 1); batch: sum w*l / sum w")
    oalw_shuffle: bool = _f(False, "control: shuffle the OALW weights across malicious samples (seeded by seed), keeping their "
                            "distribution but not their link to overlap")
    oalw_on_refusal: bool = _f(False, "also weight each refusal cross-entropy row by the OALW weight of its malicious sample")

    # CAA + refusal CE (METHOD §5)
    refusal_beta: float = _f(1.0, "weight beta of the refusal cross-entropy")
    caa_unit: PrefixUnit = _f("tokens", "unit of the harmful prefix length k")
    caa_max_prefix: int = _f(40, "k is uniform in 1..min(caa_max_prefix, response length)")
    caa_zero_share: float = _f(0.3, "share of CAA samples with k = 0 (plain refusal)")
    caa_in_retain: bool = _f(False, "also add refusal samples to the representation retain set (their refusal tokens only: "
                             "the harmful prompt and prefix are being erased)")
    beta_warmup_steps: int = _f(0, "ramp beta linearly from 0 over the first N steps (0 = constant beta from step 0)")
    c_ret_floor: float = _f(0.0, "lower bound on c_ret (after retain_scale), so the first steps are not refusal CE with no retain")

    # compliance CE (pseudo-malicious prompts -> the base model's own compliant answers)
    compliance_gamma: float = _f(0.0, "weight gamma of a cross-entropy on pseudo-malicious prompts with the base model's own "
                                 "answers that data_judge calls compliance (0 = off)")

    # output-level retain (ordinary instructions -> their retain answers)
    retain_gamma: float = _f(0.0, "weight of a cross-entropy on the retain set's answers (ordinary instructions) for methods "
                             "whose retain term is representational only (0 = off; refusal-sft and derta use sft_retain_weight)")

    # X-Boundary (method xboundary)
    xb_separation_weight: float = _f(1.0, "weight of the separation term relative to the erase term (both scaled by c_erase)")
    xb_schedule_span: float = _f(300 / 180, "xboundary schedule: c_ret = a*t/(span*T), c_erase = a*(1 - t/(span*T)); the public "
                                 "code uses t/300 with 180 steps (span 5/3); RR's schedule is span 2")

    # SFT baselines
    sft_retain_weight: float = _f(1.0, "weight of the benign-answer cross-entropy (refusal-sft, derta)")

    def __post_init__(self) -> None:
        self.validate()

    # --------------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Model-independent checks; each message names the key."""
        if self.method in VARIANTS:
            raise ConfigError(f"method: {self.method!r} is a variant of {VARIANTS[self.method].base}; build it with "
                              "TrainConfig.from_dict / load, which apply its settings")
        if self.method not in METHODS:
            raise ConfigError(f"method: unknown method {self.method!r}; choose one of {', '.join([*METHODS, *VARIANTS])}")
        check_types(self)
        positive = {"alpha": self.alpha, "retain_scale": self.retain_scale, "steps": self.steps, "batch_size": self.batch_size, "lr": self.lr,
                    "lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "max_length": self.max_length,
                    "own_max_new_tokens": self.own_max_new_tokens, "gen_batch_size": self.gen_batch_size,
                    "oalw_tau": self.oalw_tau, "oalw_k": self.oalw_k, "caa_max_prefix": self.caa_max_prefix,
                    "keep_checkpoints": self.keep_checkpoints, "rep_norm_rows": self.rep_norm_rows}
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        nonneg = {"warmup_steps": self.warmup_steps, "weight_decay": self.weight_decay, "max_grad_norm": self.max_grad_norm,
                  "checkpoint_every": self.checkpoint_every, "refusal_beta": self.refusal_beta,
                  "sft_retain_weight": self.sft_retain_weight, "lora_b_init_std": self.lora_b_init_std,
                  "beta_warmup_steps": self.beta_warmup_steps, "c_ret_floor": self.c_ret_floor,
                  "compliance_gamma": self.compliance_gamma, "xb_separation_weight": self.xb_separation_weight,
                  "retain_gamma": self.retain_gamma}
        for key, value in nonneg.items():
            if value < 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        for key in ("lora_dropout", "caa_zero_share"):
            value = getattr(self, key)
            if not 0 <= value <= 1:
                raise ConfigError(f"{key} must be in [0, 1], got {value}")
        if not 0 < self.leak_threshold <= 1:
            raise ConfigError(f"leak_threshold must be in (0, 1], got {self.leak_threshold}")
        if self.stop_after is not None and not 1 <= self.stop_after <= self.steps:
            raise ConfigError(f"stop_after must be in 1..steps ({self.steps}) or null, got {self.stop_after}")
        for key in ("max_pairs", "max_harmful", "max_retain", "max_pseudo"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be >= 1 or null, got {value}")
        spec = self.spec
        if spec.rep_loss or spec.refusal_ce:
            if not self.pair_datasets and not self.harmful_datasets:
                raise ConfigError("pair_datasets and harmful_datasets are both empty: the method needs malicious samples")
        if (spec.rep_loss or spec.ce_retain) and not self.retain_datasets:
            raise ConfigError("retain_datasets is empty: the method needs benign retain samples")
        if spec.pseudo_retain or spec.oalw:
            if not self.pseudo_datasets:
                raise ConfigError(f"pseudo_datasets is empty: method {self.method} needs pseudo-malicious samples")
        if self.target_layers is not None and not self.target_layers:
            raise ConfigError("target_layers is empty; give at least one layer or null for the default")
        if self.lora_layers is not None and not self.lora_layers:
            raise ConfigError("lora_layers is empty; give at least one layer or null for the default")
        if not self.lora_modules:
            raise ConfigError("lora_modules is empty")
        if self.xb_schedule_span < 1:
            raise ConfigError(f"xb_schedule_span must be >= 1 (c_erase would turn negative), got {self.xb_schedule_span}")
        if (self.oalw_shuffle or self.oalw_on_refusal) and not spec.oalw:
            key = "oalw_shuffle" if self.oalw_shuffle else "oalw_on_refusal"
            raise ConfigError(f"{key} needs OALW weights, but method {self.method} has none; use mosr or mosr-no-caa")
        if self.oalw_on_refusal and not spec.refusal_ce:
            raise ConfigError(f"oalw_on_refusal: method {self.method} has no refusal cross-entropy")
        if self.beta_warmup_steps and not spec.refusal_ce:
            raise ConfigError(f"beta_warmup_steps: method {self.method} has no refusal cross-entropy (beta)")
        if self.c_ret_floor and not spec.rep_loss:
            raise ConfigError(f"c_ret_floor: method {self.method} has no representation retain term")
        if self.compliance_gamma > 0 and not self.pseudo_datasets:
            raise ConfigError("compliance_gamma > 0 needs pseudo_datasets (the prompts of the compliance cross-entropy)")
        if self.retain_gamma > 0:
            if spec.ce_retain:
                raise ConfigError(f"retain_gamma: method {self.method} already has a retain cross-entropy; set sft_retain_weight")
            if not self.retain_datasets:
                raise ConfigError("retain_gamma > 0 needs retain_datasets (the ordinary instructions of the cross-entropy)")
        if self.erase_tokens == "response_and_last_prompt" and not spec.rep_loss:
            raise ConfigError(f"erase_tokens: method {self.method} has no erase term")
        from mosr.judges import JUDGES

        if self.data_judge not in JUDGES:
            raise ConfigError(f"data_judge: unknown judge {self.data_judge!r}; choose one of {', '.join(JUDGES)}")

    def check_model(self, n_layers: int) -> None:
        """Checks against the model depth (layer keys), with the key in the message."""
        for key in ("target_layers", "lora_layers"):
            for layer in getattr(self, key) or []:
                if not -n_layers <= layer < n_layers:
                    raise ConfigError(f"{key}: layer {layer} is out of range: the model has {n_layers} decoder layers (0..{n_layers - 1})")
        if self.oalw_layer is not None and not -n_layers <= self.oalw_layer < n_layers:
            raise ConfigError(f"oalw_layer: layer {self.oalw_layer} is out of range: the model has {n_layers} decoder layers (0..{n_layers - 1})")

    # ------------------------------------------------------------------------------ resolved
    @property
    def end_step(self) -> int:
        """The step the run is meant to end after: ``stop_after`` when set, else ``steps``."""
        return self.stop_after if self.stop_after is not None else self.steps

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.method]

    def resolved_target_layers(self, n_layers: int) -> list[int]:
        layers = self.target_layers if self.target_layers is not None else sorted({max(n_layers // 3, 0), max(2 * n_layers // 3, 0)})
        return sorted({layer % n_layers for layer in layers})

    def resolved_lora_layers(self, n_layers: int) -> list[int]:
        if self.lora_layers is not None:
            return sorted({layer % n_layers for layer in self.lora_layers})
        return list(range(max(self.resolved_target_layers(n_layers)) + 1))

    def resolved_oalw_layer(self, n_layers: int) -> int:
        return self.oalw_layer % n_layers if self.oalw_layer is not None else min(self.resolved_target_layers(n_layers))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, ignore: tuple[str, ...] = ("steps", "stop_after", "checkpoint_every", "keep_checkpoints")) -> str:
        """Hash of the settings that must not change when a run is resumed."""
        d = {k: v for k, v in self.to_dict().items() if k not in ignore}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_mapping(cls, resolve_method(data), check=False)  # __post_init__ checks the types

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
        """Defaults <- YAML file <- overrides (``["key=value", ...]`` or a dict)."""
        data: dict[str, Any] = {}
        if path is not None:
            data.update(read_yaml(path))
        upper = dict(overrides) if isinstance(overrides, dict) else parse_overrides(overrides or [])
        return cls.from_dict(layer_variant(data, upper))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings; values are parsed as YAML (``10``, ``[10, 20]``, ``null``); ``a,b`` makes a list."""
    out: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        if key not in fields:
            raise ConfigError(f"unknown config key {key!r} in --set {item}; known keys: {', '.join(sorted(fields))}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item}: cannot parse value ({str(exc).splitlines()[0]})") from exc
        if isinstance(value, str) and "," in value and _is_list_field(key):
            value = [yaml.safe_load(v.strip()) for v in value.split(",") if v.strip()]
        if _is_list_field(key) and value is not None and not isinstance(value, list):
            value = [value]
        out[key] = value
    return out


def _is_list_field(key: str) -> bool:
    tp = typing.get_type_hints(TrainConfig)[key]
    return any(typing.get_origin(a) is list or a is list for a in union_args(tp))


def config_help() -> list[tuple[str, str, Any]]:
    """(key, help, default) for every field, for ``mosr train --help-config`` and the docs."""
    out = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, f.metadata.get("help", ""), default))
    return out
