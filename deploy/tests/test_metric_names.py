"""The chart's PromQL agrees with the code: every metric a dashboard or alert names exists, and
the latency objectives leave out the streaming calls the code has.

The names that exist are read from the services' Prometheus registry, not written by hand: every
module of aether_common and of each service under services/*/src is imported (a new service is
covered by being there), and the collectors on prometheus_client's default registry, the one
/metrics serves (aether_common.http), are expanded to the sample names Prometheus stores.
Metrics from outside our code are declared once, in EXPORTED, with the exporter that emits them.
Streaming calls are found the same way: the SSE and WebSocket routes on the services' routers,
and the streaming RPCs in the generated descriptors of protos/.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from prometheus_client import REGISTRY
from starlette.routing import Router, WebSocketRoute

import aether

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "deploy" / "helm" / "aether" / "dashboards"
Renderer = Callable[..., Any]  # conftest.render

# Metrics the chart reads that no Aether process registers, by who emits them. Kafka consumer
# lag is not here: the services export it themselves (aether_kafka_consumer_lag, aether_common).
EXPORTED: dict[str, str] = {
    "up": "Prometheus (one series per scrape target)",
    "container_cpu_usage_seconds_total": "cAdvisor (kubelet)",
    "container_memory_working_set_bytes": "cAdvisor (kubelet)",
    "kube_pod_container_resource_limits": "kube-state-metrics",
    "pg_stat_activity_count": "postgres_exporter",
    "pg_settings_max_connections": "postgres_exporter",
    "redis_keyspace_hits_total": "redis_exporter",
    "redis_keyspace_misses_total": "redis_exporter",
}

# The series names a metric family of each type is stored under (its samples' names).
SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


# -- what the code registers ---------------------------------------------------------------------
def code_packages() -> list[str]:
    """aether_common and every service's top-level package (services/<name>/src/<package>)."""
    found = sorted(p.parent.name for p in REPO.glob("services/*/src/*/__init__.py"))
    assert found, "no service packages under services/*/src"
    return ["aether_common", *found]


def import_everything(package: str) -> None:
    """Import a package and all its modules, so each module-level metric registers itself."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if info.name.rsplit(".", 1)[-1] != "__main__":  # runs the process
            importlib.import_module(info.name)


def registered_names() -> set[str]:
    for package in code_packages():
        import_everything(package)
    # A labelled metric with no children yet still collects as a family (with no samples).
    return {
        family.name + suffix for family in REGISTRY.collect() for suffix in SUFFIXES[family.type]
    }


@pytest.fixture(scope="module")
def known() -> set[str]:
    return registered_names() | set(EXPORTED)


SSE = "text/event-stream"


def _streams(route: object) -> bool:
    """A WebSocket route, or one answering Server-Sent Events (declared in its OpenAPI
    `responses`, or as its response class's media type)."""
    if isinstance(route, WebSocketRoute):
        return True
    if not isinstance(route, APIRoute):
        return False
    declared = any(SSE in (answer.get("content") or {}) for answer in route.responses.values())
    return declared or getattr(route.response_class, "media_type", None) == SSE


@functools.cache
def http_routes() -> dict[str, bool]:
    """Route template (the `route` label) -> streams?, over every router the services define."""
    packages = code_packages()
    for package in packages:
        import_everything(package)
    routes: dict[str, bool] = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in packages:
            continue
        for router in [v for v in vars(module).values() if isinstance(v, Router)]:
            for route in router.routes:
                path = getattr(route, "path", None)
                if isinstance(path, str):
                    routes[path] = routes.get(path, False) or _streams(route)
    return routes


@functools.cache
def grpc_methods() -> dict[str, bool]:
    """Method (the `method` label, /package.Service/Method) -> streams?, from the generated
    descriptors. aether.testing's probe service is served by tests only."""
    methods: dict[str, bool] = {}
    for info in pkgutil.walk_packages(aether.__path__, "aether."):
        if not info.name.endswith("_pb2") or info.name.startswith("aether.testing."):
            continue
        for service in importlib.import_module(info.name).DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                streams = method.server_streaming or method.client_streaming
                methods[f"/{service.full_name}/{method.name}"] = streams
    return methods


# -- what the chart queries ----------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    where: str
    expr: str


# Removed before identifiers are read: strings (label values, regexes), {matchers}, [ranges],
# label lists after by/without/on/ignoring/group_*, Grafana variables, offsets and numbers.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_OFFSET = re.compile(r"\boffset\s+-?[\w.]+")
_NUMBER = re.compile(r"(?<![\w.])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)(?![\w])")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    ("and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
     "group_right", "offset", "inf", "nan", "start", "end")
)  # fmt: skip
# Grafana's templating functions: label_values(expr, label) -> expr; query_result(expr) -> expr.
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    aggregations, keywords or label names."""
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("", text)
    while _MATCHERS.search(text):
        text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        if name in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, or a function/aggregation call
        names.add(name)
    return names


def template_expr(query: str) -> str | None:
    """The PromQL inside a Grafana variable query, None for one that selects no metric."""
    for pattern in (_LABEL_VALUES, _QUERY_RESULT):
        found = pattern.match(query)
        if found:
            return found.group(1)
    return None if query.strip().startswith(("label_values(", "label_names(")) else query


def dashboard_queries(name: str, dashboard: dict[str, Any]) -> Iterator[Query]:
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        expr = template_expr(text) if isinstance(text, str) else None
        if expr:
            yield Query(f"dashboard {name}, variable ${variable['name']}", expr)

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))  # a (collapsed) row holds its panels

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = f"dashboard {name}, panel {panel.get('id')} {panel.get('title')!r}"
                yield Query(f"{where}, target {target.get('refId')}", target["expr"])


def chart_queries(render: Renderer) -> list[Query]:
    """Every PromQL expression of the PrometheusRules and dashboards the chart renders."""
    result = render()
    assert result.ok, result.stderr
    queries: list[Query] = []
    for rule_doc in result.of_kind("PrometheusRule"):
        for group in rule_doc["spec"]["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                severity = rule.get("labels", {}).get("severity", "")
                where = f"PrometheusRule {rule_doc['metadata']['name']}, {group['name']}/{name}"
                queries.append(Query(f"{where} {severity}".rstrip(), rule["expr"]))
    rendered: set[str] = set()
    for configmap in result.of_kind("ConfigMap"):
        for key, text in (configmap.get("data") or {}).items():
            if key.endswith(".json"):
                rendered.add(key)
                queries.extend(dashboard_queries(key, json.loads(text)))
    shipped = {p.name for p in DASHBOARDS.glob("*.json")}
    assert shipped <= rendered, f"dashboards the default values do not render: {shipped - rendered}"
    assert any(q.where.startswith("PrometheusRule") for q in queries), "no PrometheusRule rendered"
    return queries


# -- the tests -----------------------------------------------------------------------------------
def test_every_metric_the_chart_queries_exists(render: Renderer, known: set[str]) -> None:
    unknown = [
        f"{name}: {query.where}"
        for query in chart_queries(render)
        for name in sorted(metric_names(query.expr) - known)
    ]
    assert not unknown, (
        "metrics no service registers and no exporter in EXPORTED emits:\n  " + "\n  ".join(unknown)
    )


def test_every_declared_exporter_metric_is_used(render: Renderer) -> None:
    """EXPORTED lists what the chart relies on, nothing more."""
    used = {name for query in chart_queries(render) for name in metric_names(query.expr)}
    assert not set(EXPORTED) - used, f"EXPORTED names what no query uses: {set(EXPORTED) - used}"


LATENCY_LABELS = {
    "aether_http_request_duration_seconds_bucket": ("route", http_routes),
    "aether_grpc_server_handling_seconds_bucket": ("method", grpc_methods),
}


def test_latency_objectives_leave_out_streaming_calls(render: Renderer) -> None:
    """Every quantile over the HTTP or gRPC server latency, in the alerts and the dashboards,
    excludes each streaming route or method (an SSE answer or a socket lasts minutes) and no
    other: a unary call stays under the objective."""
    problems: list[str] = []
    checked: set[str] = set()
    for query in chart_queries(render):
        if "histogram_quantile" not in query.expr:
            continue
        for metric in metric_names(query.expr) & set(LATENCY_LABELS):
            label, calls = LATENCY_LABELS[metric]
            quoted = re.findall(rf'\b{label}\s*!~\s*("(?:[^"\\]|\\.)*")', query.expr)
            excluded = [re.compile(json.loads(q)) for q in quoted]
            for call, streams in sorted(calls().items()):
                if streams != any(x.fullmatch(call) for x in excluded):
                    verb = "counts toward" if streams else "is left out of"
                    problems.append(f"{query.where}: {label} {call} {verb} the quantile")
            checked.add(f"{query.where.split(',')[0]} {metric}")
    assert not problems, "\n".join(problems)
    assert len(checked) == 4, checked  # rules and dashboard, HTTP and gRPC: none skipped


def test_the_streaming_lists_in_values_are_the_codes(values: dict[str, Any]) -> None:
    streaming = values["monitoring"]["prometheusRule"]["streaming"]
    assert set(streaming["httpRoutes"]) == {r for r, s in http_routes().items() if s}
    assert set(streaming["grpcMethods"]) == {m for m, s in grpc_methods().items() if s}


def test_the_registry_holds_every_services_metrics(known: set[str]) -> None:
    """The import walk reached the shared kit and each service, so `known` is not vacuous."""
    for name in (
        "aether_http_requests_total",
        "aether_grpc_server_handling_seconds_bucket",
        "aether_ai_tokens_in_total",
        "aether_auth_lockouts_total",
        "aether_gateway_chat_connections",
    ):
        assert name in known, name


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (service, le) (rate(a_bucket{route!~"/x|/y", s=~"$service"}[5m]))',
            {"a_bucket"},
        ),
        ("sum(rate(a_total[1h])) * 3600 / on (instance) group_left (x) b > 0.5", {"a_total", "b"}),
        ("histogram_quantile(0.95, sum(rate(h_bucket[$__rate_interval])) by (le))", {"h_bucket"}),
        ("a unless b offset 5m and bool c", {"a", "b", "c"}),
        ("max_over_time(up[1h:5m]) == 0 or vector(1e3)", {"up"}),
    ],
)
def test_metric_names_reads_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
