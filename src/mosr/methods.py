"""The one registry of defense methods: what each trains, and how the experiment and the report name it.

A :class:`Method` is registered once with :func:`register_method`; training
(:attr:`mosr.training.TrainConfig.spec`), the experiment's method list and the report's row names and
ablation table all read it. A *variant* is a named setting of a trained method (``base`` plus
``overrides`` of :class:`~mosr.training.TrainConfig` keys); ``undefended`` trains nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mosr.errors import ConfigError


@dataclass(frozen=True)
class Method:
    """A defense method (or a variant of one). Every trained method runs through the same loop."""

    name: str
    title: str  # the row name in reports
    summary: str  # one plain-words clause for the report
    description: str = ""  # the technical description (``mosr train --help``)
    rep_loss: bool = False  # erase + representation retain (RR, METHOD §4)
    oalw: bool = False  # overlap-aware erase weights (§5)
    caa: bool = False  # harmful prefix before the refusal (§5); without it the refusal starts the answer
    refusal_ce: bool = False  # token cross-entropy on refusals
    pseudo_retain: bool = False  # pseudo-malicious prompts with the model's own answers join the retain set
    ce_retain: bool = False  # SFT-style cross-entropy on benign answers (baselines without a representation loss)
    separation: bool = False  # X-Boundary: push boundary-safe (pseudo-malicious) prompt states off their compliant reference
    trains: bool = True  # False: the base model as shipped (no training stage)
    base: str | None = None  # a variant: the trained method it sets options of
    overrides: Mapping[str, Any] = field(default_factory=dict)  # a variant's TrainConfig keys
    default: bool = False  # run by ``mosr experiment`` when the config lists no methods
    ablation: bool = False  # a row of the report's OALW x CAA ablation table

    @property
    def is_variant(self) -> bool:
        return self.base is not None


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry; a variant's ``base`` must be a registered trained method."""
    if method.name in _REGISTRY and not replace:
        raise ConfigError(f"method {method.name!r} is already registered; pass replace=True to replace it")
    if method.base is not None:
        base = _REGISTRY.get(method.base)
        if base is None or base.is_variant or not base.trains:
            raise ConfigError(f"variant {method.name!r}: its base {method.base!r} is not a registered trained method")
    _REGISTRY[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a registered method (for tests and notebooks that register their own)."""
    _REGISTRY.pop(name, None)


def get_method(name: str) -> Method:
    method = _REGISTRY.get(name)
    if method is None:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}")
    return method


def all_methods() -> tuple[Method, ...]:
    """Every registered method, in registration order."""
    return tuple(_REGISTRY.values())


def all_by_name() -> dict[str, Method]:
    return dict(_REGISTRY)


class _View(Mapping[str, Method]):
    """A live, read-only view of the registry: later registrations show up."""

    def __init__(self, keep: Callable[[Method], bool]) -> None:
        self._keep = keep

    def _items(self) -> dict[str, Method]:
        return {name: m for name, m in _REGISTRY.items() if self._keep(m)}

    def __getitem__(self, name: str) -> Method:
        return self._items()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._items())})"


TRAINED: Mapping[str, Method] = _View(lambda m: m.trains and not m.is_variant)  # training methods proper
VARIANTS: Mapping[str, Method] = _View(lambda m: m.is_variant)
DEFAULT: Mapping[str, Method] = _View(lambda m: m.default)  # the experiment's default list
ABLATION: Mapping[str, Method] = _View(lambda m: m.ablation)

UNDEFENDED = "undefended"

for _m in (
    Method(UNDEFENDED, "Undefended", "the base model as shipped, no defense", trains=False, default=True),
    Method("refusal-sft", "Refusal SFT", "fine-tuned to answer harmful prompts with a refusal, plus ordinary benign answers",
           "cross-entropy on harmful prompt -> refusal, plus benign answers", refusal_ce=True, ce_retain=True, default=True),
    Method("derta", "DeRTa-style SFT", "refusals trained to follow a piece of the harmful answer, plus benign answers; no representation loss",
           "SFT on harmful prefix + refusal (DeRTa-style), plus benign answers", caa=True, refusal_ce=True, ce_retain=True, default=True),
    Method("rr", "RR (Circuit Breakers)", "representation rerouting: scrambles the model's internal state on harmful prompts, keeps it on benign ones",
           "representation rerouting (Circuit Breakers), METHOD §4", rep_loss=True, default=True),
    Method("xboundary", "X-Boundary", "RR-style erasure + retain with a boundary-safe set, and a term that separates boundary-safe from harmful states",
           "X-Boundary: erase + retain (with the boundary-safe set) + separation of boundary-safe states",
           rep_loss=True, pseudo_retain=True, separation=True, default=True),
    Method("mosr", "MOSR", "RR + overlap-aware loss weighting (OALW) + context-aware augmentation (CAA): the paper's method",
           "RR + OALW-weighted erase + CAA refusal CE + pseudo-malicious retain",
           rep_loss=True, oalw=True, caa=True, refusal_ce=True, pseudo_retain=True, default=True, ablation=True),
    Method("mosr-no-oalw", "MOSR without OALW", "ablation: every harmful sample erased with the same weight",
           "MOSR without overlap-aware weights", rep_loss=True, caa=True, refusal_ce=True, pseudo_retain=True, default=True, ablation=True),
    Method("mosr-no-caa", "MOSR without CAA", "ablation: refusals always start the answer (no harmful prefix)",
           "MOSR without harmful prefixes (refusal CE at k=0)", rep_loss=True, oalw=True, refusal_ce=True, pseudo_retain=True,
           default=True, ablation=True),
    Method("mosr-no-oalw-no-caa", "MOSR without OALW and CAA", "ablation: RR + refusal training + pseudo-malicious retain",
           "RR + refusal CE + pseudo-malicious retain", rep_loss=True, refusal_ce=True, pseudo_retain=True, default=True, ablation=True),
):
    register_method(_m)

for _name, _overrides, _title, _summary, _description in (
    ("mosr-gamma", {"compliance_gamma": 1.0}, "MOSR + compliance CE",
     "variant: also trained to answer the scary-but-benign training prompts with the base model's own answers",
     "MOSR + compliance CE (gamma = 1) on pseudo-malicious prompts with the base model's own answers"),
    ("mosr-oalw-refusal", {"oalw_on_refusal": True}, "MOSR, OALW on refusals",
     "variant: the overlap weights also scale the refusal training rows", "MOSR with the OALW weights also on the refusal cross-entropy rows"),
    ("mosr-beta-warmup", {"beta_warmup_steps": 20}, "MOSR, beta warm-up",
     "variant: refusal training ramps up over the first steps instead of starting at full weight", "MOSR with beta ramped up over the first 20 steps"),
    ("mosr-cret-floor", {"c_ret_floor": 2.0}, "MOSR, retain floor",
     "variant: the retain term never has zero weight, also at the first steps", "MOSR with c_ret never below 2"),
    ("mosr-warmup-floor", {"beta_warmup_steps": 20, "c_ret_floor": 2.0}, "MOSR, beta warm-up + retain floor",
     "variant: refusal training ramps up over the first steps, and the retain term never has zero weight",
     "MOSR with beta ramped up over the first 20 steps and c_ret never below 2"),
    ("mosr-warmup-floor4", {"beta_warmup_steps": 20, "c_ret_floor": 4.0}, "MOSR, beta warm-up + retain floor 4",
     "variant: refusal training ramps up over the first steps, and the retain term never falls below 4",
     "MOSR with beta ramped up over the first 20 steps and c_ret never below 4"),
    ("mosr-warmup-pseudo-all", {"beta_warmup_steps": 20, "max_pseudo": None}, "MOSR, beta warm-up + full benign-but-scary pool",
     "variant: refusal training ramps up over the first steps, and every scary-but-benign training prompt is retained",
     "MOSR with beta ramped up over the first 20 steps and all of the pseudo-malicious training pool"),
    ("mosr-erase-response", {"erase_tokens": "response_and_last_prompt"}, "MOSR, erase answer only",
     "variant: erasure on the harmful answer and the last prompt token, not on the prompt's topic words",
     "MOSR erasing only the response and the last prompt token"),
    ("mosr-pseudo-all", {"max_pseudo": None}, "MOSR, full benign-but-scary pool",
     "variant: every scary-but-benign training prompt in the retain set, not 96", "MOSR with all of the pseudo-malicious training pool (no cap)"),
    ("mosr-oalw-shuffled", {"oalw_shuffle": True}, "MOSR, shuffled OALW (control)",
     "control: the same overlap weights, shuffled across samples", "control: MOSR with the OALW weights shuffled across samples"),
    ("mosr-oalw-more", {"oalw_sign": "more"}, "MOSR, reversed OALW (control)",
     "control: overlapping harmful samples erased more, not less", "control: MOSR with the reverse OALW sign (overlap erased more)"),
    ("mosr-wide-harmful", {"max_harmful": None}, "MOSR, wider harmful pool",
     "variant: every harmful training prompt of the configured sets, not a capped subset",
     "MOSR with every harmful training prompt of harmful_datasets (no cap)"),
):
    register_method(Method(_name, _title, _summary, _description, base="mosr", overrides=_overrides))
