"""The services a local platform runs: each declares itself in `[tool.aether]`.

In `services/<name>/pyproject.toml`:

    [tool.aether]
    command = ["python", "-m", "aether_auth"]   # required; run in services/<name>/
    http_port = 3001                   # waited for at /readyz; AETHER_HTTP_PORT
    grpc_port = 4001                   # AETHER_GRPC_PORT
    postgres_databases = ["aether_auth"]      # created when missing; the first one is
                                              # AETHER_DATABASE_URL
    topics = ["aether.auth.user_registered.v1",                  # created when missing,
              { name = "aether.auth.login.v1", partitions = 6,   # 3 partitions by default
                retention_ms = 604800000 }]
    buckets = ["aether-charts"]        # S3 buckets, created when missing
    mongo = true                       # AETHER_MONGO_DATABASE = aether_<name>
    env = { AUTH_DATABASE_URL = "{database_url}", AUTH_JWT_SECRET = "dev-only-jwt" }

Only `command` is required; an unknown key is refused (a typo is an error, not a no-op).
`"python"` as the first word of `command` means this workspace's interpreter. `command` items
and `env` values are templates over `{name}`, `{http_port}`, `{grpc_port}`, `{database_url}`,
`{root}` and every `Endpoints` field (`{kafka_bootstrap}`, `{redis_url}`, `{s3_endpoint}` ...);
write `{{` for a literal brace.

Every service's environment: this shell's, plus AETHER_ENV=dev, the AETHER_* server addresses
(`Endpoints.as_env()`), AETHER_SERVICE_NAME, its own AETHER_HTTP_PORT / AETHER_GRPC_PORT /
AETHER_DATABASE_URL / AETHER_MONGO_DATABASE, every declared service's address as
AETHER_<NAME>_HTTP_URL and AETHER_<NAME>_GRPC_TARGET (how the gateway finds the others), and
its `env` table. Services start in name order, the gateway last.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from aether_common.events.topics import TopicSpec
from aether_devstack.endpoints import Endpoints
from aether_devstack.servers import HOST

GATEWAY = "gateway"
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_KEYS = frozenset(
    {"command", "http_port", "grpc_port", "postgres_databases", "topics", "buckets", "mongo", "env"}
)


class DevError(RuntimeError):
    """A problem the developer can act on; shown as one line, without a traceback."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    directory: Path
    command: list[str]
    http_port: int | None = None
    grpc_port: int | None = None
    postgres_databases: list[str] = field(default_factory=list)
    topics: list[TopicSpec] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)
    mongo: bool = False
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_table(cls, name: str, directory: Path, table: dict[str, Any]) -> ServiceSpec:
        where = f"{directory / 'pyproject.toml'} [tool.aether]"
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise DevError(f"{where}: unknown key(s) {', '.join(unknown)}")
        command = table.get("command")
        if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
            raise DevError(f"{where}: `command` must be a non-empty list of strings")
        databases = _names(table, "postgres_databases", where)
        for db in databases:
            if not _DB_NAME.fullmatch(db):
                raise DevError(f"{where}: database name {db!r} must be lowercase [a-z0-9_]")
        env = table.get("env", {})
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            raise DevError(f"{where}: `env` must be a table of strings")
        mongo = table.get("mongo", False)
        if not isinstance(mongo, bool):
            raise DevError(f"{where}: `mongo` must be true or false")
        return cls(
            name=name,
            directory=directory,
            command=list(command),
            http_port=_port(table, "http_port", where),
            grpc_port=_port(table, "grpc_port", where),
            postgres_databases=databases,
            topics=[_topic(t, where) for t in table.get("topics", [])],
            buckets=_names(table, "buckets", where),
            mongo=mongo,
            env=dict(env),
        )

    @property
    def ports(self) -> dict[str, int]:
        named = {"http": self.http_port, "grpc": self.grpc_port}
        return {f"{self.name} {kind}": port for kind, port in named.items() if port}


def _names(table: dict[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
        raise DevError(f"{where}: `{key}` must be a list of names")
    return list(value)


def _port(table: dict[str, Any], key: str, where: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if not (isinstance(value, int) and 0 < value < 65536):
        raise DevError(f"{where}: `{key}` must be a port number")
    return value


def _topic(item: Any, where: str) -> TopicSpec:
    if isinstance(item, str):
        return TopicSpec(item)
    if (
        isinstance(item, dict)
        and isinstance(item.get("name"), str)
        and set(item) <= {"name", "partitions", "retention_ms"}
    ):
        spec = TopicSpec(item["name"], partitions=int(item.get("partitions", 3)))
        if "retention_ms" in item:
            spec = replace(spec, retention_ms=int(item["retention_ms"]))
        return spec
    raise DevError(f"{where}: each topic is a name or {{name, partitions, retention_ms}}")


def load_services(services_dir: Path) -> list[ServiceSpec]:
    """Every `<services_dir>/<name>/` with a `[tool.aether]` table; the gateway sorts last."""
    specs = []
    for pyproject in sorted(services_dir.glob("*/pyproject.toml")):
        with pyproject.open("rb") as f:
            table = tomllib.load(f).get("tool", {}).get("aether")
        if table is not None:
            specs.append(ServiceSpec.from_table(pyproject.parent.name, pyproject.parent, table))
    return sorted(specs, key=lambda s: (s.name == GATEWAY, s.name))


def database_url(endpoints: Endpoints, database: str) -> str:
    base: str = endpoints.postgres_dsn.rpartition("/")[0]
    return f"{base}/{database}"


def service_env(
    spec: ServiceSpec, specs: Sequence[ServiceSpec], endpoints: Endpoints, root: Path
) -> dict[str, str]:
    env: dict[str, str] = dict(os.environ) | endpoints.as_env()
    env |= {"AETHER_ENV": "dev", "AETHER_SERVICE_NAME": spec.name, "PYTHONUNBUFFERED": "1"}
    for other in specs:
        prefix = "AETHER_" + other.name.upper().replace("-", "_")
        if other.http_port:
            env[f"{prefix}_HTTP_URL"] = f"http://{HOST}:{other.http_port}"
        if other.grpc_port:
            env[f"{prefix}_GRPC_TARGET"] = f"{HOST}:{other.grpc_port}"
    if spec.http_port:
        env["AETHER_HTTP_PORT"] = str(spec.http_port)
    if spec.grpc_port:
        env["AETHER_GRPC_PORT"] = str(spec.grpc_port)
    if spec.postgres_databases:
        env["AETHER_DATABASE_URL"] = database_url(endpoints, spec.postgres_databases[0])
    if spec.mongo:
        env["AETHER_MONGO_DATABASE"] = "aether_" + spec.name.replace("-", "_")
    values = _template_values(spec, endpoints, root)
    for key, template in spec.env.items():
        env[key] = _render(template, values, spec)
    return env


def service_argv(spec: ServiceSpec, endpoints: Endpoints, root: Path) -> list[str]:
    values = _template_values(spec, endpoints, root)
    argv = [_render(arg, values, spec) for arg in spec.command]
    if argv[0] == "python":
        argv[0] = sys.executable
    return argv


def _template_values(spec: ServiceSpec, endpoints: Endpoints, root: Path) -> dict[str, Any]:
    first_db = spec.postgres_databases[0] if spec.postgres_databases else None
    return asdict(endpoints) | {
        "name": spec.name,
        "root": str(root),
        "http_port": spec.http_port or "",
        "grpc_port": spec.grpc_port or "",
        "database_url": database_url(endpoints, first_db) if first_db else "",
    }


def _render(template: str, values: dict[str, Any], spec: ServiceSpec) -> str:
    try:
        return template.format_map(values)
    except (KeyError, ValueError, IndexError) as exc:
        raise DevError(f"service {spec.name}: bad template {template!r} ({exc!r})") from None
