"""Multi-agent answers: each agent's part under a "### <agent>" heading, in request order, and
the usage of the whole (tokens and cost summed, the slowest latency, the first first token)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aether_ai.answers import CACHED, Outcome
from aether_ai.records import AgentPart, Usage

MULTI_AGENT = "multi_agent"


@dataclass(frozen=True, slots=True)
class Merged:
    answer: str
    usage: Usage
    finish_reason: str
    parts: list[AgentPart]


def heading(agent: str) -> str:
    return f"### {agent}\n"


def merge(agents: Sequence[str], outcomes: Sequence[Outcome]) -> Merged:
    answer = "\n\n".join(
        heading(agent) + outcome.answer.strip()
        for agent, outcome in zip(agents, outcomes, strict=True)
    )
    usages = [outcome.usage for outcome in outcomes]
    models = list(dict.fromkeys(usage.model for usage in usages))
    usage = Usage(
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        total_tokens=sum(u.total_tokens for u in usages),
        cost_usd=sum(u.cost_usd for u in usages),
        latency_ms=max(u.latency_ms for u in usages),
        first_token_ms=min(u.first_token_ms for u in usages),
        cached=all(u.cached for u in usages),
        model=",".join(models),
    )
    reasons = {outcome.finish_reason for outcome in outcomes}
    if reasons == {CACHED}:
        finish = CACHED
    elif "length" in reasons:
        finish = "length"
    else:
        finish = "stop"
    parts = [
        AgentPart(
            agent=agent, model=outcome.usage.model, content=outcome.answer, usage=outcome.usage
        )
        for agent, outcome in zip(agents, outcomes, strict=True)
    ]
    return Merged(answer, usage, finish, parts)
