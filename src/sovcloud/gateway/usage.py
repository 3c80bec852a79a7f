"""Token counts of an upstream answer: its ``usage`` when it is sound, else an estimate from the generated text."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["count_tokens", "text_tokens"]


def count_tokens(value: Any, fallback: int) -> int:
    """``value`` when it is a token count (a non-negative int), else ``fallback``."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else fallback


def text_tokens(data: bytes, cap: int) -> int:
    """Completion tokens of a response without ``usage``: ceil(bytes / 4) of its generated text, at most ``cap``."""
    try:
        choices = orjson.loads(data).get("choices") or ()
    except (orjson.JSONDecodeError, AttributeError):
        return cap
    n = 0
    for ch in choices:
        if isinstance(ch, dict):
            msg = ch.get("message")
            text = msg.get("content") if isinstance(msg, dict) else ch.get("text")
            if isinstance(text, str) and text:
                n += -(-len(text.encode("utf-8", "surrogatepass")) // 4)
    return min(n, cap)
