"""The umbrella chart, rendered with helm: what every workload must have, per values set.

Value sets: the chart's defaults, each environment (dev, staging, prod) and each region on top
of prod (us, eu, asia). Datastore subcharts stay off (managed-services mode; see conftest).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
CHART_SRC = REPO / "deploy" / "helm" / "aether"
Render = Any  # conftest.Render: .ok, .docs, .stderr, .of_kind(), .get(), .names()
Renderer = Callable[..., Any]

SETS: dict[str, tuple[str, ...]] = {
    "default": (),
    "dev": ("dev",),
    "staging": ("staging",),
    "prod": ("prod",),
    "prod-us": ("prod", "us"),
    "prod-eu": ("prod", "eu"),
    "prod-asia": ("prod", "asia"),
}
REGIONS = {
    "us": ("us-east-1", "primary"),
    "eu": ("eu-west-1", "secondary"),
    "asia": ("ap-southeast-1", "secondary"),
}


def enabled_components(values: dict[str, Any]) -> list[str]:
    return sorted(name for name, c in values["components"].items() if c["enabled"])


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    first: dict[str, Any] = containers[0]
    return first


@pytest.fixture(params=sorted(SETS), scope="module")
def rendered(request: pytest.FixtureRequest, render: Renderer) -> Render:
    result = render(*SETS[request.param])
    assert result.ok, result.stderr
    return result


# --- every workload -------------------------------------------------------------------------


def test_the_components_with_code_render_a_deployment_each(
    rendered: Render, values: dict[str, Any]
) -> None:
    expected = {f"aether-{name}" for name in enabled_components(values)}
    assert rendered.names("Deployment") == expected
    assert expected == {
        f"aether-{p.name}"
        for p in (REPO / "services").iterdir()
        if (p / "pyproject.toml").is_file()
    }


def test_every_workload_has_resources_probes_and_security(rendered: Render) -> None:
    for deployment in rendered.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert "livenessProbe" in c, name
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz", name
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["privileged"] is False, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 10000
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], name
        assert c["command"] == ["python", "-m", f"aether_{name.removeprefix('aether-')}"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["AETHER_HTTP_HOST"] == "0.0.0.0", (
            name
        )  # the gateway binds loopback in dev otherwise


def test_every_workload_spreads_over_zones(rendered: Render) -> None:
    for deployment in rendered.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        zone = [
            t
            for t in pod["topologySpreadConstraints"]
            if t["topologyKey"] == "topology.kubernetes.io/zone"
        ]
        assert len(zone) == 1, deployment["metadata"]["name"]
        assert zone[0]["maxSkew"] == 1
        selector = zone[0]["labelSelector"]["matchLabels"]
        assert selector == deployment["spec"]["selector"]["matchLabels"]


def test_native_grpc_liveness_where_the_component_serves_grpc(render: Renderer) -> None:
    result = render()
    auth = container(result.get("Deployment", "aether-auth"))
    assert auth["livenessProbe"]["grpc"] == {"port": 4001, "service": ""}
    assert {p["name"]: p["containerPort"] for p in auth["ports"]} == {"http": 3001, "grpc": 4001}
    gateway = container(result.get("Deployment", "aether-gateway"))
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["name"]: p["containerPort"] for p in gateway["ports"]} == {"http": 8080}


def test_prod_spreads_hard_over_three_zones_and_keeps_two_thirds_up(render: Renderer) -> None:
    result = render("prod", "us")
    for deployment in result.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        zone = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
        assert zone["whenUnsatisfiable"] == "DoNotSchedule", name
        hpa = result.get("HorizontalPodAutoscaler", name)
        assert hpa["spec"]["minReplicas"] >= 3, name
        pdb = result.get("PodDisruptionBudget", name)["spec"]["minAvailable"]
        assert pdb == 2 or pdb == "75%", name
        assert "replicas" not in deployment["spec"], f"{name}: the HPA owns the replica count"


# --- HPA, PDB and the other per-component objects -------------------------------------------


@pytest.mark.parametrize("values_set", ["default", "staging", "prod-eu"])
def test_hpa_pdb_and_friends_exist_per_component_when_enabled(
    render: Renderer, values: dict[str, Any], values_set: str
) -> None:
    result = render(*SETS[values_set])
    for name in enabled_components(values):
        full = f"aether-{name}"
        hpa = result.get("HorizontalPodAutoscaler", full)
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": full,
        }
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert (
            result.get("PodDisruptionBudget", full)["spec"]["selector"]["matchLabels"][
                "app.kubernetes.io/component"
            ]
            == name
        )
        for kind in ("Service", "ServiceAccount", "NetworkPolicy", "ServiceMonitor"):
            result.get(kind, full)
        assert result.get("ServiceAccount", full)["automountServiceAccountToken"] is False


def test_dev_turns_hpa_pdb_and_monitoring_off(render: Renderer) -> None:
    result = render("dev")
    for kind in (
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
    ):
        assert result.of_kind(kind) == [], kind
    for deployment in result.of_kind("Deployment"):
        assert deployment["spec"]["replicas"] == 1


def test_a_pdb_that_would_block_every_drain_is_refused(render: Renderer) -> None:
    result = render(
        set={
            "components.auth.pdb.minAvailable": "2",
            "components.auth.autoscaling.minReplicas": "2",
        }
    )
    assert not result.ok
    assert (
        "components.auth.pdb.minAvailable (2) must be below the replica floor (2)" in result.stderr
    )


# --- disabled components ----------------------------------------------------------------------


def test_disabled_components_render_nothing(render: Renderer, values: dict[str, Any]) -> None:
    disabled = [name for name, c in values["components"].items() if not c["enabled"]]
    assert disabled, "every component is enabled: nothing to check"
    result = render()
    for doc in result.docs:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/component") not in disabled, doc["metadata"]["name"]
        assert not any(doc["metadata"]["name"] == f"aether-{name}" for name in disabled)
    config = result.get("ConfigMap", "aether-config")["data"]
    for name in disabled:
        assert f"AETHER_{name.upper()}_GRPC_TARGET" not in config


def test_adding_a_service_is_a_values_change(render: Renderer) -> None:
    result = render(set={"components.chat.enabled": "true"})
    assert result.ok, result.stderr
    chat = container(result.get("Deployment", "aether-chat"))
    assert chat["image"] == "aether-chat:0.1.0"
    assert chat["livenessProbe"]["grpc"]["port"] == 4003
    for kind in (
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
    ):
        result.get(kind, "aether-chat")
    config = result.get("ConfigMap", "aether-config")["data"]
    assert (
        config["AETHER_CHAT_GRPC_TARGET"]
        == "dns:///aether-chat-headless.aether.svc.cluster.local:4003"
    )


# --- config, discovery, secrets ------------------------------------------------------------------


def test_services_find_each_other_through_the_shared_configmap(render: Renderer) -> None:
    result = render()
    config = result.get("ConfigMap", "aether-config")["data"]
    assert (
        config["AETHER_AUTH_GRPC_TARGET"]
        == "dns:///aether-auth-headless.aether.svc.cluster.local:4001"
    )
    assert (
        config["AETHER_GATEWAY_HTTP_URL"] == "http://aether-gateway.aether.svc.cluster.local:8080"
    )
    assert "AETHER_GATEWAY_GRPC_TARGET" not in config
    headless = result.get("Service", "aether-auth-headless")
    assert headless["spec"]["clusterIP"] == "None"
    for deployment in result.of_kind("Deployment"):
        env_from = container(deployment)["envFrom"]
        assert {"configMapRef": {"name": "aether-config"}} in env_from


def test_staging_and_prod_take_secrets_from_external_secrets_only(
    render: Renderer, values: dict[str, Any]
) -> None:
    for values_set in ("staging", "prod-us", "prod-eu"):
        result = render(*SETS[values_set])
        assert result.of_kind("Secret") == [], values_set
        region = "us" if values_set == "staging" else values_set.split("-")[1]
        env = "staging" if values_set == "staging" else "prod"
        for name in enabled_components(values):
            external = result.get("ExternalSecret", f"aether-{name}")
            assert external["spec"]["target"]["name"] == f"aether-{name}"
            key = external["spec"]["dataFrom"][0]["extract"]["key"]
            expected_region = region if values_set != "staging" else "local"
            assert key == f"aether/{env}/{expected_region}/{name}"


def test_inline_secrets_are_refused_in_prod(render: Renderer) -> None:
    result = render(
        "prod", set={"secrets.create": "true", "secrets.externalSecrets.enabled": "false"}
    )
    assert not result.ok
    assert (
        "secrets.create renders Secrets from values, refused for environment prod" in result.stderr
    )


def test_dev_secrets_point_at_in_cluster_datastores(render: Renderer) -> None:
    secret = render("dev").get("Secret", "aether-auth")
    assert secret["stringData"]["AETHER_DATABASE_URL"].startswith("postgresql://aether:dev-only-")
    assert "@aether-postgresql:5432/auth" in secret["stringData"]["AETHER_DATABASE_URL"]


@pytest.mark.parametrize("service", ["alerts", "worker"])
def test_dev_service_identity_credentials_match(render: Renderer, service: str) -> None:
    # A service's dev secret and the hash auth holds for it (docs/architecture.md "Service
    # identity").
    result = render("dev")
    clients = json.loads(result.get("Secret", "aether-auth")["stringData"]["AUTH_SERVICE_CLIENTS"])
    variable = f"{service.upper()}_AUTH_CLIENT_SECRET"
    secret = result.get("Secret", f"aether-{service}")["stringData"][variable]
    assert secret.startswith("dev-only-")
    assert clients[service]["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert clients[service]["permissions"] == ["charts:read"]


# --- regions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_each_region_sets_its_region(render: Renderer, region: str) -> None:
    cloud_region, role = REGIONS[region]
    result = render("prod", region)
    config = result.get("ConfigMap", "aether-config")["data"]
    assert config["AETHER_REGION"] == region
    assert config["AETHER_CLOUD_REGION"] == cloud_region
    assert config["AETHER_REGION_ROLE"] == role
    assert config["AETHER_ENV"] == "prod"
    assert cloud_region in config["AETHER_KAFKA_BOOTSTRAP"]
    for doc in result.docs:
        assert doc["metadata"]["labels"]["aether.dev/region"] == region, doc["metadata"]["name"]
    for deployment in result.of_kind("Deployment"):
        env = {e["name"]: e.get("value") for e in container(deployment)["env"]}
        assert f"cloud.region={cloud_region}" in env["OTEL_RESOURCE_ATTRIBUTES"]
    rule = result.get("PrometheusRule", "aether")
    assert {r["labels"]["region"] for g in rule["spec"]["groups"] for r in g["rules"]} == {region}
    ingress = result.get("Ingress", "aether-gateway")
    assert f"api.{region}.aether.example" in ingress["spec"]["tls"][0]["hosts"]


def test_exactly_one_primary_region() -> None:
    roles = {
        r: yaml.safe_load((CHART_SRC / "values" / f"{r}.yaml").read_text())["region"]["role"]
        for r in REGIONS
    }
    assert sorted(roles.values()) == ["primary", "secondary", "secondary"]


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_mirrormaker2_pulls_every_other_region_and_honours_residency(
    render: Renderer, region: str
) -> None:
    result = render("prod", region)
    mm2 = result.get("KafkaMirrorMaker2", "aether-mm2")["spec"]
    others = sorted(set(REGIONS) - {region})
    aliases = {c["alias"] for c in mm2["clusters"]}
    assert aliases == {region, *others}
    assert mm2["connectCluster"] == region
    assert sorted(m["sourceCluster"] for m in mm2["mirrors"]) == others
    assert all(m["targetCluster"] == region for m in mm2["mirrors"])
    for c in mm2["clusters"]:
        assert "tls" in c, c["alias"]
        assert c["authentication"]["type"] == "scram-sha-512", c["alias"]
    # A region that enforces residency keeps its resident topics: mirrors FROM it exclude them.
    for source in others:
        residency = yaml.safe_load((CHART_SRC / "values" / f"{source}.yaml").read_text())["region"][
            "dataResidency"
        ]
        mirror = next(m for m in mm2["mirrors"] if m["sourceCluster"] == source)
        exclude = re.compile(mirror["topicsExcludePattern"])
        assert exclude.fullmatch("aether.chat.message_posted.v1.dlq"), "dead letters stay home"
        if residency["enforced"]:
            pattern = residency["residentTopicsPattern"]
            assert pattern in mirror["topicsExcludePattern"], (region, source)
            for topic in ("aether.auth.user_registered.v1", "aether.chat.message_posted.v1"):
                assert re.fullmatch(pattern, topic), topic
                assert exclude.fullmatch(topic), topic
            assert not exclude.fullmatch("aether.charts.bar_closed.v1")


# --- ingress, network, monitoring ----------------------------------------------------------------


def test_gateway_ingress_has_tls_and_websocket_timeouts(render: Renderer) -> None:
    nginx = render().get("Ingress", "aether-gateway")
    annotations = nginx["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert nginx["spec"]["tls"][0]["secretName"] == "aether-api-tls"
    backend = nginx["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "aether-gateway", "port": {"name": "http"}}
    alb = render("prod", "us").get("Ingress", "aether-gateway")
    assert alb["spec"]["ingressClassName"] == "alb"
    assert (
        "idle_timeout.timeout_seconds=3600"
        in alb["metadata"]["annotations"]["alb.ingress.kubernetes.io/load-balancer-attributes"]
    )


def test_only_the_public_api_is_routed_from_the_internet(render: Renderer) -> None:
    for result in (render(), render("prod", "us")):
        rules = result.get("Ingress", "aether-gateway")["spec"]["rules"]
        paths = {p["path"] for rule in rules for p in rule["http"]["paths"]}
        assert {"/api", "/ws", "/.well-known", "/health"} <= paths
        # Prefix matching is per path element: none of these reaches /metrics or the probes.
        assert not {"/", "/metrics", "/healthz", "/readyz"} & paths
        assert all(p.startswith("/") and p != "/" for p in paths)


def test_network_policies_default_deny_then_allow(render: Renderer) -> None:
    result = render("prod", "us")
    gateway = result.get("NetworkPolicy", "aether-gateway")["spec"]
    assert gateway["policyTypes"] == ["Ingress", "Egress"]
    sources = [peer for rule in gateway["ingress"] for peer in rule["from"]]
    assert {"ipBlock": {"cidr": "10.10.0.0/16"}} in sources
    assert any(
        p.get("namespaceSelector", {}).get("matchLabels")
        == {"kubernetes.io/metadata.name": "ingress-nginx"}
        for p in sources
    )
    auth = result.get("NetworkPolicy", "aether-auth")["spec"]
    auth_sources = [peer for rule in auth["ingress"] for peer in rule["from"]]
    assert not any("ipBlock" in p for p in auth_sources), (
        "only the gateway is reachable from the VPC"
    )


def test_prometheus_rule_has_the_platform_thresholds(render: Renderer) -> None:
    rule = render("prod", "us").get("PrometheusRule", "aether")
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    by = {(r["alert"], r["labels"]["severity"]): r["expr"] for r in rules}
    expected = {
        "AetherHttpErrorRateHigh": ("> 0.005", "> 0.01"),
        "AetherGrpcErrorRateHigh": ("> 0.005", "> 0.01"),
        "AetherHttpLatencyP95High": ("> 0.5", "> 1"),
        "AetherCpuHigh": ("> 0.7", "> 0.9"),
        "AetherMemoryHigh": ("> 0.8", "> 0.9"),
        "AetherDbConnectionsHigh": ("> 0.7", "> 0.8"),
        "AetherCacheHitRateLow": ("< 0.85", "< 0.7"),
    }
    for alert, (warning, critical) in expected.items():
        assert by[(alert, "warning")].rstrip().endswith(warning), alert
        assert by[(alert, "critical")].rstrip().endswith(critical), alert
    # Metric names and the streaming exclusions are checked against the code: test_metric_names.py.
    assert "histogram_quantile(0.95" in by[("AetherHttpLatencyP95High", "warning")]
    assert 'status=~"5.."' in by[("AetherHttpErrorRateHigh", "warning")]


def test_servicemonitors_label_each_series_with_its_service_and_region(render: Renderer) -> None:
    monitor = render("prod", "eu").get("ServiceMonitor", "aether-auth")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["service"]["sourceLabels"] == [
        "__meta_kubernetes_service_label_app_kubernetes_io_component"
    ]
    assert relabel["region"]["replacement"] == "eu"


def test_dashboard_shows_red_kafka_cache_and_ai(render: Renderer) -> None:
    configmap = render().get("ConfigMap", "aether-dashboards")
    dashboard = json.loads(configmap["data"]["aether-overview.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    text = "\n".join(exprs)
    for needle in (
        "aether_http_requests_total",
        "aether_http_request_duration_seconds_bucket",
        "aether_grpc_server_handled_total",
        "aether_kafka_consumer_lag",
        "aether_outbox_pending",
        "redis_keyspace_hits_total",
        "aether_ai_tokens_in_total",
        "aether_ai_tokens_out_total",
    ):
        assert needle in text, needle
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --- values and schema -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "components.auth.replicas",
            "x",
            "components.auth.replicas: Invalid type. Expected: integer",
        ),
        ("default.replicas", "x", "default.replicas: Invalid type. Expected: integer"),
        (
            "components.auth.ports.grpc",
            "70000",
            "components.auth.ports.grpc: Must be less than or equal to 65535",
        ),
        ("components.auth.probes.liveness.type", "tcp", "components.auth.probes.liveness.type"),
        ("environment", "production", "environment"),
        ("region.role", "leader", "region.role"),
        ("default.replicaz", "3", "Additional property replicaz is not allowed"),
        ("components.auth.image.digest", "sha256:nothex", "components.auth.image.digest"),
    ],
)
def test_schema_rejects_a_bad_value(render: Renderer, key: str, value: str, message: str) -> None:
    result = render(set={key: value})
    assert not result.ok, f"{key}={value} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_a_grpc_probe_without_a_grpc_port_is_refused(render: Renderer) -> None:
    result = render(set={"components.gateway.probes.liveness.type": "grpc"})
    assert not result.ok
    assert (
        "components.gateway.probes.liveness.type is grpc but the component has no gRPC port"
        in result.stderr
    )


def test_an_in_cluster_datastore_cannot_render_offline_and_says_why(render: Renderer) -> None:
    result = render(set={"postgresql.enabled": "true"})
    assert not result.ok
    assert "offline stub of postgresql" in result.stderr
    assert "postgresql.enabled=false" in result.stderr


def test_every_schema_property_is_documented() -> None:
    schema = json.loads((CHART_SRC / "values.schema.json").read_text())
    missing: list[str] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        for name, prop in (node.get("properties") or {}).items():
            if isinstance(prop, dict) and set(prop) - {"required"} and "description" not in prop:
                missing.append(f"{path}.{name}")
            walk(prop, f"{path}.{name}")
        for key in ("additionalProperties", "items"):
            walk(node.get(key), f"{path}[]")
        for sub in node.get("allOf", []):
            walk(sub, path)
        for name, sub in (node.get("definitions") or {}).items():
            walk(sub, f"#{name}")

    walk(schema, "")
    assert missing == []


def test_every_value_in_values_yaml_is_known_to_the_schema(values: dict[str, Any]) -> None:
    schema = json.loads((CHART_SRC / "values.schema.json").read_text())
    definitions = schema["definitions"]

    def props(node: dict[str, Any]) -> dict[str, Any] | None:
        merged: dict[str, Any] = {}
        for sub in [node, *node.get("allOf", [])]:
            if "$ref" in sub:
                sub = definitions[sub["$ref"].split("/")[-1]]
            merged.update(sub.get("properties") or {})
        if not merged:
            return None
        return merged

    unknown: list[str] = []

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if not isinstance(value, dict) or (
            node.get("additionalProperties") is not False and not node.get("allOf")
        ):
            return
        known = props(node)
        if known is None:
            return
        for key, sub in value.items():
            if key not in known:
                unknown.append(f"{path}.{key}")
            else:
                walk(sub, known[key], f"{path}.{key}")

    walk(values, schema, "")
    assert unknown == []


# --- skaffold ------------------------------------------------------------------------------------


def test_skaffold_builds_every_service_and_wires_its_image() -> None:
    skaffold = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    artifacts = {a["image"]: a for a in skaffold["build"]["artifacts"]}
    services = sorted(
        p.name for p in (REPO / "services").iterdir() if (p / "pyproject.toml").is_file()
    )
    assert sorted(artifacts) == [f"aether-{s}" for s in services]
    templates = skaffold["deploy"]["helm"]["releases"][0]["setValueTemplates"]
    for service in services:
        artifact = artifacts[f"aether-{service}"]
        assert artifact["docker"] == {"dockerfile": "Dockerfile", "buildArgs": {"SERVICE": service}}
        var = f"aether_{service}"
        assert templates[f"components.{service}.image.repository"] == f"{{{{.IMAGE_REPO_{var}}}}}"
        assert templates[f"components.{service}.image.digest"] == f"{{{{.IMAGE_DIGEST_{var}}}}}"
    profiles = {p["name"]: p for p in skaffold["profiles"]}
    assert {"dev", "debug", "us", "eu", "asia"} <= set(profiles)
    for region in REGIONS:
        files = next(
            p["value"] for p in profiles[region]["patches"] if p["path"].endswith("/valuesFiles")
        )
        assert files == [
            "deploy/helm/aether/values/prod.yaml",
            f"deploy/helm/aether/values/{region}.yaml",
        ]


def test_dockerfile_is_parameterised_pinned_and_non_root() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", dockerfile)
    assert 'uv sync --frozen --no-dev --no-editable --package "aether-${SERVICE}"' in dockerfile
    runtime = dockerfile[dockerfile.index("AS runtime") :]
    assert "USER 10001:10001" in runtime
    assert "uv" not in re.sub(r"#.*", "", runtime).split(), "no build tool in the final stage"
    assert "pip uninstall" in runtime


def test_terraform_has_one_env_per_region_and_every_module() -> None:
    tf = REPO / "deploy" / "terraform"
    assert sorted(p.name for p in (tf / "envs").iterdir()) == sorted(REGIONS)
    modules = {p.name for p in (tf / "modules").iterdir()}
    assert {
        "network",
        "kubernetes_cluster",
        "postgres",
        "redis",
        "kafka",
        "search",
        "object_storage",
        "dns",
    } <= modules
    for module in modules:
        variables = (tf / "modules" / module / "variables.tf").read_text()
        assert "validation {" in variables, module
        assert (tf / "modules" / module / "outputs.tf").is_file(), module


def test_values_files_listed_in_docs() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text()
    for path in sorted((CHART_SRC / "values").glob("*.yaml")):
        assert path.name in doc, f"docs/deploy.md does not mention values/{path.name}"


def test_rendered_docs_have_names_and_no_duplicates(rendered: Render) -> None:
    seen: set[tuple[str, str]] = set()
    for doc in rendered.docs:
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, key
        seen.add(key)
        assert doc["metadata"]["namespace"] == "aether", key


def test_every_component_of_the_design_renders_when_enabled(render: Renderer) -> None:
    design = {
        "gateway": (8080, 0),
        "auth": (3001, 4001),
        "chat": (3003, 4003),
        "discussion": (3004, 4004),
        "charts": (3005, 4005),
        "alerts": (3006, 4006),
        "ai": (3007, 4007),
        "memory": (3008, 4008),
        "worker": (3009, 4009),
        "audit": (3010, 4010),
    }
    result = render(set={f"components.{name}.enabled": "true" for name in design})
    assert result.ok, result.stderr
    for name, (http, grpc) in design.items():
        ports = {
            p["name"]: p["containerPort"]
            for p in container(result.get("Deployment", f"aether-{name}"))["ports"]
        }
        assert ports == ({"http": http, "grpc": grpc} if grpc else {"http": http}), name


def test_gateway_reads_the_revocation_denylist_from_auths_redis(render: Renderer) -> None:
    result = render("dev")
    gateway = result.get("Secret", "aether-gateway")["stringData"]
    auth = result.get("Secret", "aether-auth")["stringData"]
    assert gateway["GATEWAY_REVOCATION_REDIS_URL"] == auth["AETHER_REDIS_URL"]


def test_gateway_subscribes_to_chats_fanout_redis(render: Renderer) -> None:
    result = render("dev")
    gateway = result.get("Secret", "aether-gateway")["stringData"]
    chat = result.get("Secret", "aether-chat")["stringData"]
    assert gateway["GATEWAY_CHAT_FANOUT_REDIS_URL"] == chat["AETHER_REDIS_URL"]
    env = {
        e["name"]: e.get("value") for e in container(result.get("Deployment", "aether-chat"))["env"]
    }
    assert env["AETHER_MONGO_DATABASE"] == "chat"
