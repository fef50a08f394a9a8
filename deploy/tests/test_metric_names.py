"""The chart's PromQL agrees with the code: every metric a dashboard or alert names exists.

The names that exist are read from the services' Prometheus registry, not written by hand: every
module of aether_common and of each service under services/*/src is imported (a new service is
covered by being there), and the collectors on prometheus_client's default registry, the one
/metrics serves (aether_common.http), are expanded to the sample names Prometheus stores.
Metrics from outside our code are declared once, in EXPORTED, with the exporter that emits them.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

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
