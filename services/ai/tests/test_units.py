"""Unit tests: no I/O (routing, the in-process cache, cache keys, the slot queue, indicators,
validation, prompt budget, settings, multi-agent merge)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from aether.ai.v1 import ai_pb2
from aether_ai import analysis, prompts, schemas, validation
from aether_ai.agents import merge
from aether_ai.answers import Outcome, replay_pieces
from aether_ai.cache import ENTRY_OVERHEAD_BYTES, BoundedLru, cache_key, normalise_prompt
from aether_ai.config import AiSettings
from aether_ai.conversations import Turn
from aether_ai.llm import estimate_prompt_tokens
from aether_ai.queue import ModelSlots
from aether_ai.rag import Snippet, footer
from aether_ai.records import Bar, Job, Usage
from aether_ai.routing import DEEP, DEEP_THRESHOLD, FAST, route
from aether_common.errors import Unavailable, ValidationFailed


# -- auto routing -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "message",
    ["hi", "What is a stock?", "Define EPS.", "who are you", "What does ETF stand for?"],
)
def test_simple_questions_route_to_fast(message: str) -> None:
    assert route(message).mode == FAST


@pytest.mark.parametrize(
    "message",
    [
        "Compare the risk of value and growth strategies and explain why one outperforms.",
        "Analyse AAPL: revenue grew 8%, margins 25% and P/E 30. Is the valuation stretched?",
        "What is a bond? How do rates affect it? And why do prices fall when yields rise?",
        "1. Evaluate my portfolio\n2. Suggest a hedging strategy\n3. Forecast the drawdown",
        "Please give me a detailed, step by step backtest plan for a momentum strategy "
        "across sectors, with position sizing, stop rules and the metrics to judge it, "
        "because I want to run it before committing capital to it next quarter, and also "
        "tell me what could go wrong with the data and how to avoid look-ahead bias there.",
    ],
)
def test_hard_questions_route_to_deep_thinking(message: str) -> None:
    chosen = route(message)
    assert chosen.mode == DEEP
    assert chosen.score >= DEEP_THRESHOLD
    assert chosen.reasons


def test_routing_is_deterministic_and_explains_itself() -> None:
    message = "Why does a rising dollar hurt emerging markets, and what is the risk for bonds?"
    assert route(message) == route(message)
    assert any("analysis words" in reason for reason in route(message).reasons)
    assert route("What is 2+2?").reasons == ()


# -- the in-process cache -----------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_l1_evicts_the_least_recently_used_entry_past_its_count() -> None:
    lru = BoundedLru(max_entries=3, max_bytes=1_000_000, ttl_s=60)
    for key in "abc":
        lru.put(key, b"x")
    assert lru.get("a") == b"x"  # "a" is now the most recent: "b" is the oldest
    lru.put("d", b"x")
    assert len(lru) == 3
    assert "b" not in lru
    assert all(key in lru for key in "acd")


def test_l1_evicts_past_its_byte_cap_too() -> None:
    size = len("k0") + 100 + ENTRY_OVERHEAD_BYTES
    lru = BoundedLru(max_entries=1000, max_bytes=size * 3, ttl_s=60)
    for n in range(4):
        lru.put(f"k{n}", b"v" * 100)
    assert len(lru) == 3
    assert "k0" not in lru
    assert lru.bytes == size * 3
    # One value bigger than the whole cap is not stored (and evicts nothing).
    lru.put("huge", b"v" * (size * 3))
    assert "huge" not in lru
    assert len(lru) == 3
    # Replacing a key keeps one entry and the byte count right.
    lru.put("k3", b"v" * 10)
    assert lru.bytes == size * 2 + len("k3") + 10 + ENTRY_OVERHEAD_BYTES


def test_l1_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    lru = BoundedLru(max_entries=10, max_bytes=10_000, ttl_s=60, clock=clock)
    lru.put("a", b"x")
    clock.now = 59.9
    assert lru.get("a") == b"x"
    clock.now = 60.0
    assert lru.get("a") is None
    assert len(lru) == 0
    assert lru.bytes == 0


def test_l1_clears_one_mode_or_all() -> None:
    lru = BoundedLru(max_entries=10, max_bytes=10_000, ttl_s=60)
    for key in ("fast:1", "fast:2", "learn:1"):
        lru.put(key, b"x")
    assert lru.clear("fast") == 2
    assert list(k for k in ("fast:1", "fast:2", "learn:1") if k in lru) == ["learn:1"]
    assert lru.clear() == 1
    assert len(lru) == 0


def test_cache_keys_normalise_the_prompt_and_separate_what_must_be() -> None:
    base: dict[str, Any] = {
        "mode": "fast",
        "model_id": "http://llm/v1|smollm2-135m",
        "settings": "system|0.2|16",
        "prompt": "What is a Stock?",
        "context": "c",
        "user_id": None,
    }
    key = cache_key(**base)
    assert key.startswith("fast:")
    assert normalise_prompt("  What  is\n a STOCK? ") == "what is a stock?"
    assert cache_key(**base | {"prompt": "  what is   a stock? "}) == key
    for change in (
        {"prompt": "What is a bond?"},
        {"context": "other snippets"},
        {"user_id": "alice"},
        {"model_id": "http://llm/v1|other"},
        {"mode": "learn"},
        {"settings": "system|0.2|32"},
    ):
        assert cache_key(**base | change) != key, change
    assert cache_key(**base | {"user_id": "alice"}) != cache_key(**base | {"user_id": "bob"})


@pytest.mark.parametrize("text", ["", "one", "a b c " * 40, "x" * 100 + " tail", "Sources: [1] a"])
def test_cached_answers_replay_in_pieces_that_join_to_the_answer(text: str) -> None:
    pieces = replay_pieces(text)
    assert "".join(pieces) == text
    assert all(pieces)


# -- the slot queue ------------------------------------------------------------------------------
async def test_slots_queue_then_refuse_with_ai_busy() -> None:
    slots = ModelSlots(2, timeout_s=0.05)
    async with slots.slot(), slots.slot():
        assert slots.in_flight == 2
        with pytest.raises(Unavailable) as refused:
            async with slots.slot():
                pass
        assert refused.value.error_code == "ai_busy"
        assert "all 2 model slots" in refused.value.detail
        assert refused.value.retry_after is not None
        assert slots.waiting == 0
    assert slots.in_flight == 0


async def test_a_waiting_request_gets_the_slot_a_finished_one_frees() -> None:
    slots = ModelSlots(1, timeout_s=30)
    release = asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with slots.slot():
            order.append("first")
            await release.wait()

    async def second() -> None:
        async with slots.slot():
            order.append("second")

    holder = asyncio.create_task(first())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(second())
    for _ in range(100):  # a few loop turns until the waiter queued
        if slots.waiting:
            break
        await asyncio.sleep(0)
    assert slots.waiting == 1
    assert order == ["first"]
    release.set()
    await asyncio.gather(holder, waiter)
    assert order == ["first", "second"]
    assert (slots.in_flight, slots.waiting) == (0, 0)


# -- indicators ------------------------------------------------------------------------------------
def bars_of(closes: list[float], volumes: list[float] | None = None) -> analysis.Bars:
    volumes = volumes or [100.0] * len(closes)
    rows = [
        (86400.0 * i, c, c + 1, c - 1, c, v)
        for i, (c, v) in enumerate(zip(closes, volumes, strict=True))
    ]
    return analysis.columns(rows)


def test_indicators_on_known_series() -> None:
    rising = np.arange(1.0, 61.0)
    assert analysis.rsi(rising) == 100.0
    assert analysis.rsi(np.full(30, 5.0)) == 0.0  # TA-Lib's value, the one charts shows
    assert analysis.rsi(np.arange(1.0, 15.0)) is None  # 14 closes: 13 changes, too few
    assert analysis.sma(rising, 20) == pytest.approx(np.mean(rising[-20:]))
    assert analysis.sma(rising[:10], 20) is None
    assert analysis.max_drawdown(np.array([100.0, 120.0, 90.0, 130.0, 65.0])) == pytest.approx(50.0)
    assert analysis.max_drawdown(rising) == 0.0
    volume = np.array([100.0] * 10 + [150.0] * 10)
    assert analysis.volume_trend(volume) == pytest.approx(50.0)


def test_rsi_follows_wilders_smoothing() -> None:
    closes = np.array([44.0, 44.3, 44.1, 44.6, 45.2, 45.0, 45.4, 45.9, 46.2, 45.8, 46.1, 46.5,
                       46.3, 46.8, 47.1, 46.9, 47.3])  # fmt: skip
    deltas = np.diff(closes)
    gains, losses = np.clip(deltas, 0, None), np.clip(-deltas, 0, None)
    avg_gain, avg_loss = gains[:14].mean(), losses[:14].mean()
    for gain, loss in zip(gains[14:], losses[14:], strict=True):
        avg_gain = (avg_gain * 13 + gain) / 14
        avg_loss = (avg_loss * 13 + loss) / 14
    assert analysis.rsi(closes) == pytest.approx(100 - 100 / (1 + avg_gain / avg_loss))


def test_volatility_per_bar_and_annualised_from_the_bar_spacing() -> None:
    closes = np.array([100.0, 102.0, 99.0, 101.0, 103.0])
    returns = np.diff(closes) / closes[:-1]
    per_bar, annual = analysis.volatility(closes, np.arange(5, dtype=np.float64) * 86400.0)
    assert per_bar == pytest.approx(returns.std(ddof=1) * 100)
    assert annual == pytest.approx(returns.std(ddof=1) * np.sqrt(365.25) * 100)
    assert analysis.volatility(closes[:2], np.array([0.0, 86400.0])) == (None, None)


def test_the_summary_names_every_figure() -> None:
    summary = analysis.summarise("AAPL", bars_of([100.0 + i for i in range(60)]))
    assert summary.bars == 60
    assert summary.last_close == 159.0
    assert summary.change_pct == pytest.approx(59.0)
    text = summary.as_text()
    for words in ("AAPL: 60 bars", "SMA20", "SMA50", "RSI14 100.0", "volatility", "drawdown"):
        assert words in text
    short = analysis.summarise("X", bars_of([10.0, 11.0]))
    assert "SMA50 n/a" in short.as_text()
    assert "RSI14 n/a" in short.as_text()


# -- validation --------------------------------------------------------------------------------
def pb_bar(day: int, **fields: float) -> ai_pb2.Bar:
    when = Timestamp()
    when.FromDatetime(datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=day))
    values = {"open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 5.0} | fields
    return ai_pb2.Bar(time=when, **values)


def bars_of_request(*bars: ai_pb2.Bar) -> list[Bar]:
    """The bars as the gRPC edge reads them (schemas.py)."""
    return list(schemas.analyze_query(ai_pb2.AnalyzeRequest(symbol="X", bars=bars)).bars)


def test_bars_are_checked_bar_by_bar() -> None:
    good = validation.bars(bars_of_request(pb_bar(0), pb_bar(1)))
    assert list(good.close) == [10.5, 10.5]
    for bars, words in [
        ([pb_bar(0)], "2-5000"),
        ([pb_bar(0), pb_bar(1, high=10.2)], "bars[1]: high"),
        ([pb_bar(0), pb_bar(1, low=10.2)], "bars[1]: low"),
        ([pb_bar(0), pb_bar(1, volume=-1)], "volume"),
        ([pb_bar(0), pb_bar(1, close=float("nan"))], "positive"),
        ([pb_bar(0), pb_bar(1, open=0.0, low=0.0)], "positive"),
        ([pb_bar(1), pb_bar(0)], "time order"),
        ([pb_bar(1), pb_bar(1)], "time order"),
        ([pb_bar(0), ai_pb2.Bar(open=1, high=1, low=1, close=1)], "bars[1].time is required"),
    ]:
        with pytest.raises(ValidationFailed) as refused:
            validation.bars(bars_of_request(*bars))
        assert words in refused.value.detail


def test_symbols_and_bounded_numbers() -> None:
    assert validation.symbol(" brk.b ") == "BRK.B"
    assert validation.symbol("^gspc") == "^GSPC"
    for bad in ("", "AA PL", "A" * 17, "AAPL!"):
        with pytest.raises(ValidationFailed):
            validation.symbol(bad)
    assert validation.bounded(0, field="days", default=30, low=1, high=366) == 30
    assert validation.bounded(366, field="days", default=30, low=1, high=366) == 366
    with pytest.raises(ValidationFailed, match="days must be 1-366"):
        validation.bounded(367, field="days", default=30, low=1, high=366)


# -- prompt budget -------------------------------------------------------------------------------
def test_the_prompt_keeps_to_its_budget_newest_history_first() -> None:
    history = [Turn("user", f"old question {n} " * 10) for n in range(6)]
    history.append(Turn("assistant", "the latest answer"))
    sources = [Snippet(1, "kb-1", "knowledge", 0.9, "a snippet")]
    messages = prompts.build(
        "Be brief.",
        "Q " * 2000,
        sources=sources,
        history=history,
        budget_chars=1000,
        turn_chars=100,
    )
    assert messages[0]["role"] == "system"
    assert "[1] a snippet" in messages[0]["content"]
    assert messages[-1]["role"] == "user"
    assert sum(len(m["content"]) for m in messages) <= 1000
    assert prompts.ELLIPSIS in messages[-1]["content"]  # the long question lost its middle
    # What history fitted is the newest, in order.
    kept = [m["content"] for m in messages[1:-1]]
    assert kept == [] or kept[-1] == "the latest answer"

    roomy = prompts.build("Be brief.", "Q?", history=history, budget_chars=5000, turn_chars=100)
    assert len(roomy) == 2 + len(history)
    assert all(len(m["content"]) <= 100 for m in roomy[1:-1])


def test_the_footer_lists_the_cited_ids_in_order() -> None:
    snippets = [Snippet(1, "kb-a", "knowledge", 0.9, "x"), Snippet(2, "m-1", "memories", 0.5, "y")]
    assert footer(snippets) == "\n\nSources: [1] kb-a [2] m-1"
    assert footer([]) == ""


def test_prompt_tokens_estimate_grows_with_the_prompt() -> None:
    short = estimate_prompt_tokens([{"role": "user", "content": "hi"}])
    long = estimate_prompt_tokens([{"role": "user", "content": "hi " * 100}])
    assert 0 < short < long


# -- settings -------------------------------------------------------------------------------------
REQUIRED = {
    "environment": "test",
    "database_url": "postgresql://x/y",
    "redis_url": "redis://x",
    "kafka_bootstrap": "x:9092",
    "auth_grpc_target": "x:1",
    "memory_grpc_target": "x:2",
    "llm_base_url": "http://x/v1",
}


def test_modes_and_models_merge_over_the_defaults_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI_MODES", '{"fast": {"max_tokens": 64}, "learn": {"model": "tutor"}}')
    monkeypatch.setenv(
        "AI_MODELS",
        '{"tutor": {"base_url": "https://api.example.com/v1", "model": "m-1", '
        '"api_key": "sk-real", "input_price_per_1k": 0.001}}',
    )
    settings = AiSettings(**REQUIRED)  # type: ignore[arg-type]
    assert settings.modes["fast"].max_tokens == 64
    assert settings.modes["fast"].model == "small"  # the rest of the mode kept
    assert settings.modes["learn"].model == "tutor"
    assert set(settings.models) == {"small", "large", "tutor"}
    assert settings.base_url(settings.models["tutor"]) == "https://api.example.com/v1"
    assert settings.base_url(settings.models["small"]) == "http://x/v1"
    assert settings.models["tutor"].cost(1000, 0) == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"modes": {"telepathy": {}}}, "unknown mode"),
        ({"modes": {"fast": {"model": "nope"}}}, "unknown model"),
        ({"modes": {"fast": {"rag_namespaces": ["chat"]}}}, "namespace"),
        ({"default_mode": "nope"}, "default_mode"),
    ],
)
def test_inconsistent_modes_are_refused(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        AiSettings(**REQUIRED | fields)


# -- multi-agent merge ---------------------------------------------------------------------------
def usage(model: str, prompt: int, completion: int, cost: float, *, cached: bool = False) -> Any:
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=cost,
        latency_ms=100 + prompt,
        first_token_ms=prompt,
        cached=cached,
        model=model,
    )


def test_agents_merge_in_request_order_under_headings() -> None:
    merged = merge(
        ["learn", "fast"],
        [
            Outcome("Lesson.", "stop", usage("small", 10, 5, 0.01)),
            Outcome("Quick.", "length", usage("large", 20, 7, 0.02)),
        ],
    )
    assert merged.answer == "### learn\nLesson.\n\n### fast\nQuick."
    assert merged.finish_reason == "length"
    assert (merged.usage.prompt_tokens, merged.usage.completion_tokens) == (30, 12)
    assert merged.usage.cost_usd == pytest.approx(0.03)
    assert merged.usage.latency_ms == 120
    assert merged.usage.first_token_ms == 10
    assert merged.usage.model == "small,large"
    assert [p.agent for p in merged.parts] == ["learn", "fast"]
    cached = merge(
        ["a", "b"],
        [
            Outcome("x", "cached", usage("small", 0, 0, 0, cached=True)),
            Outcome("y", "cached", usage("small", 0, 0, 0, cached=True)),
        ],
    )
    assert cached.finish_reason == "cached"
    assert cached.usage.cached


# -- the gRPC edge (schemas.py) ----------------------------------------------------------------
def test_the_stored_encodings_round_trip() -> None:
    query = schemas.chat_query(
        ai_pb2.ChatRequest(
            message="hi", mode="fast", model="small", agents=["fast", "learn"], no_cache=True
        )
    )
    assert schemas.chat_query_from_bytes(schemas.chat_request_bytes(query)) == query
    spent = usage("small", 3, 4, 0.5, cached=True)
    assert schemas.usage_from_bytes(schemas.usage_bytes(spent)) == spent


def test_a_job_message_has_finished_at_and_usage_only_when_there_are_some() -> None:
    created = datetime(2024, 1, 1, tzinfo=UTC)
    queued = Job("j", "queued", created, None, "", None, "", "")
    message = schemas.job_pb(queued)
    assert message.status == ai_pb2.JOB_STATUS_QUEUED
    assert message.created_at.ToDatetime(tzinfo=UTC) == created
    assert not message.HasField("finished_at")
    assert not message.HasField("usage")
    done = schemas.job_pb(
        Job("j", "succeeded", created, created, "a", usage("small", 1, 2, 0.1), "c", "")
    )
    assert done.HasField("finished_at")
    assert (done.usage.completion_tokens, done.usage.model) == (2, "small")


def test_only_the_edge_touches_protobuf() -> None:
    """service.py and the stores speak records (records.py); ai.v1 messages are read and built
    in grpc.py and schemas.py (and the event payload in events.py)."""
    edge = {"grpc.py", "schemas.py", "events.py", "rag.py"}  # rag.py: the memory client
    package = Path(schemas.__file__).parent
    for module in sorted(package.glob("*.py")):
        if module.name not in edge:
            assert "ai_pb2" not in module.read_text(), module.name
