"""Mode `auto`: a deterministic difficulty score picks `fast` (small model) or `deep_thinking`
(large model). No model call: the score must cost nothing and explain itself.

Points (a question scoring DEEP_THRESHOLD or more goes to deep_thinking):
- length: +1 past 160 characters, +2 past 400;
- analysis words (analyse, compare, explain why, risk, strategy, ...): +2 for the first, +1 for
  a second, +1 for a third or more;
- several questions (2+ question marks, or numbered parts): +2;
- figures: +1 for three or more numbers, +1 for percentages or money amounts;
- reasoning connectives (because, therefore, versus, trade-off, if ... then): +1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FAST = "fast"
DEEP = "deep_thinking"
DEEP_THRESHOLD = 3

ANALYSIS_WORDS = (
    "analy",  # analyse, analyze, analysis
    "compare",
    "comparison",
    "evaluate",
    "assess",
    "explain why",
    "why does",
    "why do",
    "implication",
    "strategy",
    "strategies",
    "risk",
    "forecast",
    "predict",
    "valuation",
    "correlat",
    "pros and cons",
    "trade-off",
    "tradeoff",
    "step by step",
    "in depth",
    "in detail",
    "detailed",
    "optimi",
    "portfolio",
    "hedg",
    "backtest",
    "derive",
    "prove",
)
CONNECTIVES = re.compile(
    r"\b(because|therefore|however|versus|vs\.?|whereas|if\b.*\bthen|otherwise)\b"
)
NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
MONEY_OR_PERCENT = re.compile(r"(\d\s*%|[$€£¥]\s*\d|\b\d+(?:\.\d+)?\s*(usd|eur|bps)\b)")
NUMBERED_PARTS = re.compile(r"(?m)^\s*(?:\d+[.)]|[-*])\s+\S")


@dataclass(frozen=True, slots=True)
class Route:
    mode: str
    score: int
    reasons: tuple[str, ...]


def route(message: str) -> Route:
    text = message.strip().lower()
    score = 0
    reasons: list[str] = []

    if len(text) > 400:
        score += 2
        reasons.append("long")
    elif len(text) > 160:
        score += 1
        reasons.append("medium length")

    words = [word for word in ANALYSIS_WORDS if word in text]
    if words:
        score += min(4, len(words) + 1)
        reasons.append("analysis words: " + ", ".join(words))

    if text.count("?") >= 2 or len(NUMBERED_PARTS.findall(message)) >= 2:
        score += 2
        reasons.append("several questions")

    if len(NUMBER.findall(text)) >= 3:
        score += 1
        reasons.append("numbers")
    if MONEY_OR_PERCENT.search(text):
        score += 1
        reasons.append("percentages or amounts")

    if CONNECTIVES.search(text):
        score += 1
        reasons.append("reasoning connectives")

    return Route(DEEP if score >= DEEP_THRESHOLD else FAST, score, tuple(reasons))
