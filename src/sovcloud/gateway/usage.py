"""Token counts of an upstream answer: its ``usage`` when it is sound, else an estimate from the generated text."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["count_tokens", "plain_usage", "text_tokens"]


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


def plain_usage(endpoint: str, data: bytes, prompt_estimate: int, max_tokens: int) -> tuple[int, int]:
    """(prompt, completion) tokens to settle a non-streamed answer of ``endpoint`` on.

    Chat, completions, embeddings: the upstream's ``usage`` when sound, else the estimate and the generated
    text's tokens. ``speech``: the input estimate and no completion tokens (the audio is not counted in tokens;
    OpenAI prices tts-1 by input characters). ``transcriptions``: the upstream's token usage
    (``input_tokens``/``output_tokens``) when it reports it, else the estimate and the transcript's tokens.
    """
    if endpoint == "speech":
        return prompt_estimate, 0
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    u = parsed.get("usage") if isinstance(parsed, dict) else None
    u = u if isinstance(u, dict) else {}
    if endpoint == "transcriptions":
        text = parsed.get("text") if isinstance(parsed, dict) else data.decode("utf-8", "replace")
        spoken = -(-len(str(text or "").encode("utf-8")) // 4)
        return (count_tokens(u.get("input_tokens"), prompt_estimate),
                count_tokens(u.get("output_tokens"), min(spoken, max_tokens)))
    done = u.get("completion_tokens")
    sound = count_tokens(done, -1) >= 0
    return (count_tokens(u.get("prompt_tokens"), prompt_estimate),
            count_tokens(done, 0) if sound else text_tokens(data, max_tokens))
