"""Evaluation suites: which datasets, under which attacks, measure what.

* ``safety``: harmful prompts (held-out splits and eval-only sets), plain and under jailbreak
  wrappers. Safety = refusal + gibberish share; attack success = compliance share.
* ``over-refusal``: benign prompts that look harmful. Over-refusal = refusal + gibberish share.
* ``capability``: ordinary benign instructions (compliance and fluency) plus the perplexity of
  their reference answers.
* ``validation``: the validation splits of the trainable sets, each counted under the measure it
  stands for (safety, over-refusal, capability). It is for choosing settings without looking at the
  test sets, so it is never part of ``all`` and cannot be mixed with the test suites in one run.
"""

from __future__ import annotations

from dataclasses import dataclass

from mosr.errors import ConfigError


@dataclass(frozen=True)
class Task:
    suite: str
    dataset: str  # dataset spec, "name[:split]"
    attack: str = "none"

    @property
    def key(self) -> str:
        return f"{self.dataset}|{self.attack}"


_JAILBREAK_SET = "jbb-harmful"

SUITES: dict[str, tuple[Task, ...]] = {
    "safety": (
        Task("safety", "advbench:test"),
        Task("safety", "harmbench:test"),
        Task("safety", "strongreject"),
        Task("safety", _JAILBREAK_SET),
        Task("safety", "xstest-unsafe"),
        Task("safety", _JAILBREAK_SET, "roleplay-aim"),
        Task("safety", _JAILBREAK_SET, "roleplay-fiction"),
        Task("safety", _JAILBREAK_SET, "refusal-suppression"),
        Task("safety", _JAILBREAK_SET, "prefill"),
        Task("safety", "derta-completion-attack", "completion"),
    ),
    "over-refusal": (
        Task("over-refusal", "xstest-safe"),
        Task("over-refusal", "or-bench-hard:test"),
        Task("over-refusal", "jbb-benign"),
    ),
    "capability": (Task("capability", "self-instruct:test"),),
    "validation": (
        Task("safety", "advbench:val"),
        Task("safety", "harmful-instructions:val"),
        Task("over-refusal", "or-bench-hard:val"),
        Task("capability", "self-instruct:val"),
    ),
}
SUITE_NAMES = ("safety", "over-refusal", "capability")


def resolve_suites(names: list[str] | tuple[str, ...] | str) -> list[str]:
    """Expand ``all`` and validate suite names (order preserved, duplicates dropped)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: list[str] = []
    for name in names:
        expanded = list(SUITE_NAMES) if name == "all" else [name]
        for n in expanded:
            if n not in SUITES:
                raise ConfigError(f"unknown suite {n!r}; known: {', '.join(SUITE_NAMES)}, all, validation")
            if n not in out:
                out.append(n)
    if not out:
        raise ConfigError("no suite given; use --suite safety|over-refusal|capability|all")
    if "validation" in out and len(out) > 1:
        raise ConfigError("the validation suite cannot be mixed with the test suites in one run: its numbers would "
                          "be pooled with theirs; evaluate it into its own folder")
    return out


def tasks_for(suites: list[str]) -> list[Task]:
    return [t for s in suites for t in SUITES[s]]
