"""The messages sent to the model: system prompt (+ numbered sources), history, the question.

Everything fits `budget_chars` (~4 characters per token): the local model's context is 2,048
tokens and it reads ~180 prompt tokens/s, so long prompts are both refused and slow. What gives
way, in order: old history turns (newest kept), then the middle of the user's message (its start
and end are kept: that is where questions usually are). Source snippets are short already.
"""

from __future__ import annotations

from collections.abc import Sequence

from aether_ai.conversations import Turn
from aether_ai.llm import Message
from aether_ai.rag import Snippet

ELLIPSIS = " […] "
# The question keeps at least this much of the budget, whatever the system prompt takes.
MIN_MESSAGE_CHARS = 200


def system_message(system_prompt: str, sources: Sequence[Snippet]) -> str:
    if not sources:
        return system_prompt
    lines = "\n".join(f"[{s.n}] {s.text}" for s in sources)
    return f"{system_prompt}\nSources (cite as [n]):\n{lines}"


def fit(text: str, limit: int) -> str:
    """`text` cut to `limit` characters by dropping its middle."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(ELLIPSIS))
    head = keep * 2 // 3
    return text[:head] + ELLIPSIS + text[len(text) - (keep - head) :]


def build(
    system_prompt: str,
    message: str,
    *,
    sources: Sequence[Snippet] = (),
    history: Sequence[Turn] = (),
    budget_chars: int,
    turn_chars: int,
) -> list[Message]:
    system = system_message(system_prompt, sources)
    room = max(MIN_MESSAGE_CHARS, budget_chars - len(system))
    user = fit(message, room)
    room -= len(user)
    kept: list[Message] = []
    for turn in reversed(history):
        content = fit(turn.content, turn_chars)
        if len(content) > room:
            break
        room -= len(content)
        if turn.role == "assistant":
            kept.append({"role": "assistant", "content": content})
        else:
            kept.append({"role": "user", "content": content})
    kept.reverse()
    return [{"role": "system", "content": system}, *kept, {"role": "user", "content": user}]
