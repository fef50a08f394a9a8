"""Fixtures for the chart tests: the helm binary, the staged offline chart, a cached renderer.

helm comes from $HELM, else .tools/bin/helm (installed by deploy/helm-check.sh, which CI runs
first); without either the tests skip, saying so. The chart is rendered from a staged copy whose
datastore dependencies are guard stubs (deploy/scripts/offline_chart.py): the real subcharts
cannot be downloaded here, and every render runs in managed-services mode.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
CHART_SRC = REPO / "deploy" / "helm" / "aether"
RELEASE = "aether"
NAMESPACE = "aether"


def _helm() -> str | None:
    candidate = os.environ.get("HELM") or str(REPO / ".tools" / "bin" / "helm")
    return candidate if Path(candidate).is_file() and os.access(candidate, os.X_OK) else None


@dataclass(frozen=True)
class Render:
    ok: bool
    docs: list[dict[str, Any]]
    stderr: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        have = sorted((d["kind"], d["metadata"]["name"]) for d in self.docs)
        assert found, f"no {kind} {name}; have {have}"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.of_kind(kind)}


Renderer = Callable[..., Render]


@pytest.fixture(scope="session")
def helm() -> str:
    path = _helm()
    if path is None:
        pytest.skip(
            "helm not found: set HELM or run `bash deploy/helm-check.sh` (installs .tools/bin/helm)"
        )
    return path


@pytest.fixture(scope="session")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location(
        "aether_offline_chart", REPO / "deploy" / "scripts" / "offline_chart.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    staged: Path = module.stage(CHART_SRC, tmp_path_factory.mktemp("chart"))
    return staged


@pytest.fixture(scope="session")
def render(helm: str, chart: Path) -> Renderer:
    """render("prod", "us", set={"k": "v"}) -> Render of values/prod.yaml + values/us.yaml."""
    cache: dict[tuple[Any, ...], Render] = {}

    def _render(*values: str, set: dict[str, str] | None = None) -> Render:
        key = (values, tuple(sorted((set or {}).items())))
        if key not in cache:
            args = [
                helm,
                "template",
                RELEASE,
                str(chart),
                "-n",
                NAMESPACE,
                "--kube-version",
                "1.33.0",
            ]
            for name in values:
                args += ["-f", str(chart / "values" / f"{name}.yaml")]
            for k, v in (set or {}).items():
                args += ["--set", f"{k}={v}"]
            proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
            docs = [d for d in yaml.safe_load_all(proc.stdout) if d] if proc.returncode == 0 else []
            cache[key] = Render(proc.returncode == 0, docs, proc.stderr)
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART_SRC / "values.yaml").read_text())
    return loaded
