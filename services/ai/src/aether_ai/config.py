"""The AI service's settings (env prefix `AI_`; the devstack's `AETHER_*` names also work).

Required values have no default: PostgreSQL, Redis, Kafka, auth's and memory's gRPC addresses
and the LLM endpoint (an OpenAI-compatible `.../v1` base URL).

Models and modes are configuration. `AI_MODELS` and `AI_MODES` are JSON objects merged over the
defaults below, field by field: `AI_MODES='{"fast": {"max_tokens": 64}}'` changes one field of
one mode and keeps the rest; `AI_MODELS` may also add new named models. The set of modes is the
product's (ai.proto), so an unknown mode name is refused.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from aether_common.settings import AetherSettings

# The name llama.cpp's local server answers to (libs/devstack servers.py: LLM_MODEL).
LOCAL_MODEL_ID = "smollm2-135m"
AUTO = "auto"
MEMORIES = "memories"
KNOWLEDGE = "knowledge"
NAMESPACES = (KNOWLEDGE, MEMORIES)


def _alias(own: str, platform: str) -> AliasChoices:
    return AliasChoices(own, platform)


class ModelConfig(BaseModel):
    """One named model: where it is served and what it costs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # "" = the service's AI_LLM_BASE_URL (the local llama.cpp server in dev).
    base_url: str = ""
    model: str = LOCAL_MODEL_ID
    # "" = no key (llama.cpp ignores it); a real key for hosted endpoints.
    api_key: SecretStr = SecretStr("")
    # USD per 1,000 tokens.
    input_price_per_1k: float = Field(default=0.0, ge=0)
    output_price_per_1k: float = Field(default=0.0, ge=0)
    # Connect / between-chunks timeout of one call.
    timeout_s: float = Field(default=60.0, gt=0, le=600)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_price_per_1k + completion_tokens * self.output_price_per_1k
        ) / 1000


class ModeConfig(BaseModel):
    """One answering mode: which model, how it is prompted and whether it uses RAG."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str
    model: str
    system_prompt: str
    temperature: float = Field(default=0.3, ge=0, le=2)
    max_tokens: int = Field(default=256, ge=1, le=4096)
    # The whole generation stops at this point (finish_reason "length"): a mode's promise.
    latency_budget_s: float = Field(default=30.0, gt=0, le=600)
    rag: bool = False
    rag_namespaces: tuple[str, ...] = (KNOWLEDGE,)

    @field_validator("rag_namespaces")
    @classmethod
    def _known_namespaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in NAMESPACES]
        if unknown:
            raise ValueError(f"unknown RAG namespace(s) {unknown}; known: {list(NAMESPACES)}")
        return value


# Prices are list prices of comparable hosted models, for dev; production sets its own.
DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "small": {"input_price_per_1k": 0.00015, "output_price_per_1k": 0.0006, "timeout_s": 30},
    "large": {"input_price_per_1k": 0.0025, "output_price_per_1k": 0.01, "timeout_s": 60},
}

# System prompts stay short: the local model has a 2,048-token context and reads ~180 tokens/s.
DEFAULT_MODES: dict[str, dict[str, Any]] = {
    "fast": {
        "description": "Quick, short answers from the small model.",
        "model": "small",
        "system_prompt": "You are Aether, a helpful assistant. Answer briefly and clearly.",
        "temperature": 0.2,
        "max_tokens": 200,
        "latency_budget_s": 10,
    },
    "deep_thinking": {
        "description": "Careful step-by-step reasoning from the large model.",
        "model": "large",
        "system_prompt": "You are Aether. Think step by step, then give a clear conclusion.",
        "temperature": 0.4,
        "max_tokens": 512,
        "latency_budget_s": 60,
    },
    "trade_buddy": {
        "description": "A friendly trading companion that remembers your notes.",
        "model": "small",
        "system_prompt": "You are Aether, a friendly trading buddy. Be practical; never promise "
        "returns.",
        "temperature": 0.5,
        "max_tokens": 300,
        "latency_budget_s": 20,
        "rag": True,
        "rag_namespaces": [MEMORIES, KNOWLEDGE],
    },
    "stock_analysis": {
        "description": "Technical analysis of a price series (SMA, RSI, volatility, drawdown).",
        "model": "large",
        "system_prompt": "You are Aether, a market analyst. Interpret the indicators given; "
        "no financial advice.",
        "temperature": 0.2,
        "max_tokens": 400,
        "latency_budget_s": 45,
    },
    "web_search": {
        "description": "Answers from the shared knowledge base (no internet access here: it "
        "searches the 'knowledge' namespace).",
        "model": "small",
        "system_prompt": "You are Aether. Answer from the numbered sources and cite them as [n].",
        "temperature": 0.2,
        "max_tokens": 300,
        "latency_budget_s": 20,
        "rag": True,
        "rag_namespaces": [KNOWLEDGE],
    },
    "learn": {
        "description": "Explains trading concepts simply, with examples from the knowledge base.",
        "model": "small",
        "system_prompt": "You are Aether, a patient teacher. Explain simply, with an example.",
        "temperature": 0.3,
        "max_tokens": 400,
        "latency_budget_s": 30,
        "rag": True,
        "rag_namespaces": [KNOWLEDGE],
    },
    "normal_search": {
        "description": "A short answer grounded in the knowledge base.",
        "model": "small",
        "system_prompt": "You are Aether. Answer in two sentences from the sources; cite [n].",
        "temperature": 0.1,
        "max_tokens": 150,
        "latency_budget_s": 15,
        "rag": True,
        "rag_namespaces": [KNOWLEDGE],
    },
}


def _merge(defaults: dict[str, dict[str, Any]], given: Any, *, new_names: bool, what: str) -> Any:
    """`given` (a dict, or a JSON object from the env) merged over `defaults`, field by field."""
    if not isinstance(given, dict):
        return given  # pydantic reports the type error
    unknown = [name for name in given if name not in defaults]
    if unknown and not new_names:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(defaults)}")
    merged = {name: dict(fields) for name, fields in defaults.items()}
    for name, fields in given.items():
        if isinstance(fields, BaseModel):
            fields = fields.model_dump()
        if not isinstance(fields, dict):
            raise ValueError(f"{what} {name!r} must be an object")
        merged[name] = {**merged.get(name, {}), **fields}
    return merged


class AiSettings(AetherSettings):
    model_config = SettingsConfigDict(env_prefix="AI_")

    service_name: ClassVar[str] = "ai"

    # -- datastores and peers ----------------------------------------------------------------
    database_url: str = Field(validation_alias=_alias("AI_DATABASE_URL", "AETHER_DATABASE_URL"))
    database_pool_size: int = Field(default=10, ge=2, le=200)
    redis_url: str = Field(validation_alias=_alias("AI_REDIS_URL", "AETHER_REDIS_URL"))
    # Short: the cache must never stall an answer behind a slow Redis (a miss instead).
    redis_timeout_s: float = Field(default=1.0, gt=0)
    kafka_bootstrap: str = Field(
        validation_alias=_alias("AI_KAFKA_BOOTSTRAP", "AETHER_KAFKA_BOOTSTRAP")
    )
    # Kafka topics (and the consumer group) are `<topic_prefix><name>`: empty in production.
    topic_prefix: str = ""
    consumer_group: str = "ai"
    # While events flow the outbox relay polls this often. Each poll that finds rows costs a
    # fetch, a send and a mark: at 5 ms (the library default) a request every few ms paid all
    # three for its one event, about a third of a cache hit's CPU here (docs/operations.md).
    outbox_poll_s: float = Field(default=0.05, gt=0, le=5)
    auth_grpc_target: str = Field(
        validation_alias=_alias("AI_AUTH_GRPC_TARGET", "AETHER_AUTH_GRPC_TARGET")
    )
    auth_timeout_s: float = Field(default=5.0, gt=0)
    memory_grpc_target: str = Field(
        validation_alias=_alias("AI_MEMORY_GRPC_TARGET", "AETHER_MEMORY_GRPC_TARGET")
    )
    # RAG gives up on memory after this and answers without it.
    memory_timeout_s: float = Field(default=3.0, gt=0)
    # Analyze by symbol (no bars sent) reads candles and indicators from charts; empty: off
    # (such a request answers 503).
    charts_grpc_target: str = Field(
        default="", validation_alias=_alias("AI_CHARTS_GRPC_TARGET", "AETHER_CHARTS_GRPC_TARGET")
    )
    charts_timeout_s: float = Field(default=5.0, gt=0)
    # Candles read for an analysis by symbol (the summary's series).
    analyze_candles: int = Field(default=250, ge=2, le=5000)
    # Must match auth's AUTH_ISSUER / AUTH_AUDIENCE (their defaults are these).
    jwt_issuer: str = "aether-auth"
    jwt_audience: str = "aether"
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    jwks_refetch_interval_s: float = Field(default=10.0, ge=0)
    # Services whose calls may name the user they act for (`x-aether-on-behalf-of`,
    # aether_common.delegation): the worker runs `ai.generate` jobs for users that way.
    delegating_services: list[str] = Field(default_factory=lambda: ["worker"])

    # -- models and modes ------------------------------------------------------------------
    # The OpenAI-compatible endpoint models use unless they name their own base_url.
    llm_base_url: str = Field(
        validation_alias=_alias("AI_LLM_BASE_URL", "AETHER_LLM_BASE_URL"), min_length=1
    )
    # Defaults validated too: they go through the merge below like env values.
    models: dict[str, ModelConfig] = Field(default_factory=dict, validate_default=True)
    modes: dict[str, ModeConfig] = Field(default_factory=dict, validate_default=True)
    # The mode of a caller who never chose one (GetMode/SetMode); "auto" is allowed.
    default_mode: str = "fast"

    # -- limits and prompt budget ------------------------------------------------------------
    max_prompt_chars: int = Field(default=8000, ge=1, le=100_000)
    max_question_chars: int = Field(default=2000, ge=1, le=100_000)
    # Everything sent to the model (system + sources + history + message), in characters
    # (~4 per token): the local model's context is 2,048 tokens and it reads ~180 tokens/s.
    prompt_budget_chars: int = Field(default=4000, ge=500, le=1_000_000)
    history_turns: int = Field(default=6, ge=0, le=100)
    history_turn_chars: int = Field(default=400, ge=50)
    rag_limit: int = Field(default=3, ge=1, le=20)
    rag_snippet_chars: int = Field(default=300, ge=50, le=8000)
    rag_min_score: float = Field(default=0.0, ge=-1, le=1)

    # -- response cache ----------------------------------------------------------------------
    cache_enabled: bool = True
    cache_ttl_s: int = Field(default=3600, ge=1)
    cache_l1_max_entries: int = Field(default=1000, ge=1)
    cache_l1_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    # L2 keys are `<cache_prefix><mode>:<sha256>`; invalidations go out on
    # `<cache_prefix>invalidate` (tests give each test its own prefix).
    cache_prefix: str = "ai:cache:"

    # -- request queue -----------------------------------------------------------------------
    max_concurrency: int = Field(default=5, ge=1, le=1000)
    queue_timeout_s: float = Field(default=30.0, gt=0)

    # -- streaming ---------------------------------------------------------------------------
    # A streamed chunk carries every delta that arrived within this many ms of the previous
    # chunk (the first delta is sent at once); 0 sends each delta as its own chunk.
    stream_coalesce_ms: int = Field(default=25, ge=0, le=1000)

    # -- jobs ---------------------------------------------------------------------------------
    job_concurrency: int = Field(default=2, ge=1, le=100)
    job_poll_s: float = Field(default=0.5, gt=0)
    job_lease_s: float = Field(default=300.0, gt=0)
    job_max_attempts: int = Field(default=3, ge=1, le=20)

    # -- retention ---------------------------------------------------------------------------
    # Per-request rows (the admin performance view reads at most 7 days); the per-day usage
    # aggregates are kept. Finished jobs (their answers) are kept this long after finishing.
    request_log_retention_days: int = Field(default=30, ge=7, le=3660)
    job_retention_days: int = Field(default=7, ge=1, le=3660)
    retention_interval_s: float = Field(default=3600.0, gt=0)

    @field_validator("models", mode="before")
    @classmethod
    def _merge_models(cls, value: Any) -> Any:
        return _merge(DEFAULT_MODELS, value, new_names=True, what="model")

    @field_validator("modes", mode="before")
    @classmethod
    def _merge_modes(cls, value: Any) -> Any:
        return _merge(DEFAULT_MODES, value, new_names=False, what="mode")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        missing = sorted(set(DEFAULT_MODES) - set(self.modes))
        if missing:
            raise ValueError(f"modes missing: {missing}")
        for name, mode in self.modes.items():
            if mode.model not in self.models:
                raise ValueError(
                    f"mode {name!r} uses unknown model {mode.model!r}; known: {sorted(self.models)}"
                )
        if self.default_mode != AUTO and self.default_mode not in self.modes:
            raise ValueError(f"default_mode {self.default_mode!r} is not a mode")
        return self

    def base_url(self, model: ModelConfig) -> str:
        return model.base_url or self.llm_base_url
