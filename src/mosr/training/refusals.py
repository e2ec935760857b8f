"""Refusal templates for the refusal cross-entropy and CAA, and a keyword test for refusals.

The templates are varied on purpose (apology or not, short or with a reason, with or without an
offer of safe help) so that the model does not learn one fixed string. Each reads naturally both
as a whole answer and after a harmful prefix that was cut off.
"""

from __future__ import annotations

from pathlib import Path

from mosr.errors import ConfigError

REFUSAL_TEMPLATES: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I can't assist with this request because it could cause serious harm.",
    "I won't continue with this. Providing these details could put people at risk.",
    "Sorry, I can't provide that information.",
    "I cannot help with this. It involves activities that are dangerous or illegal.",
    "I'm not able to help with that request.",
    "I have to stop here: I can't give instructions that could be used to hurt someone.",
    "I'm sorry, I can't go on with this. If you have a different question, I'm happy to help.",
    "I can't help with creating or carrying out something harmful.",
    "That's not something I can help with, as it could lead to real harm.",
    "I must decline. This request asks for content that could be used to cause harm.",
    "I won't provide guidance on this. Is there something else I can help you with?",
    "I can't do that. Helping with this could endanger others and may be illegal.",
    "Sorry, but I won't write that.",
    "I'm unable to assist with this, since it could facilitate harm to people.",
    "I can't continue this answer. The request is for harmful content, so I'll stop here.",
    "No, I can't help with that. If you're dealing with a difficult situation, please reach out to someone you trust or a professional.",
    "I'm sorry, but providing that would be unsafe and irresponsible.",
    "I cannot provide this content. It could be misused to harm individuals or communities.",
    "I'd rather not help with this, because it could cause harm. I'm glad to help with a safer alternative.",
    "I can't share instructions for that.",
    "I apologize, but I can't assist with requests like this one.",
    "I need to stop: this goes against my commitment to avoid causing harm.",
    "I'm not going to help with that, but I'm happy to talk about the topic in a safe and legal way.",
)

REFUSAL_PREFIXES: tuple[str, ...] = (
    "i'm sorry", "i am sorry", "sorry", "i apologize", "i apologise", "i cannot", "i can't", "i can not",
    "i won't", "i will not", "i'm not able", "i am not able", "i'm unable", "i am unable", "as an ai",
    "i must decline", "i'm not going to", "i do not", "i don't think i can", "no, i",
)


def load_templates(path: str | Path | None = None) -> list[str]:
    """The built-in templates, or one refusal per non-empty line of a text file."""
    if path is None:
        return list(REFUSAL_TEMPLATES)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"refusal_templates: file not found: {p}")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"refusal_templates: {p} has no non-empty lines")
    return lines


def looks_like_refusal(text: str) -> bool:
    """Prefix keyword test (20 prefixes). Training data is sorted with the evaluation judge instead (``data_judge``)."""
    head = text.strip().lower().replace("\u2019", "'")[:80]
    return any(head.startswith(p) for p in REFUSAL_PREFIXES)
