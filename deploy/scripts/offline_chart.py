"""Stage the umbrella chart for offline checks: a copy whose datastore dependencies are guards.

The chart declares its in-cluster datastores (Bitnami PostgreSQL, Redis, ...) as dependencies
in Chart.yaml. `helm lint` and `helm template` refuse to run while a declared dependency is
missing from charts/, even when its condition is false, and `helm dependency build` needs the
network, which this machine and CI do not have. So the checks run on a staged copy whose
charts/ holds, for each dependency, a stub chart of the same name and a matching version whose
only template FAILS the render:

    offline stub of postgresql: ... render with postgresql.enabled=false

A disabled dependency is pruned before rendering, so the stub never runs in managed-services
mode (every datastore off: what staging/prod use). A values set that turns a datastore on fails
loudly instead of silently rendering without it. Nothing in the source chart is changed.

    python deploy/scripts/offline_chart.py SRC_CHART_DIR DEST_DIR   # prints the staged path
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import yaml

STUB_TEMPLATE = (
    '{{- fail "offline stub of %(name)s: the real chart is not downloadable here '
    "(no network for helm dependency build); render with %(condition)s=false "
    '(managed-services mode), or run helm dependency build where the registry is reachable" -}}\n'
)


def stub_version(constraint: str) -> str:
    """The lowest version matching a simple constraint: 16.x.x -> 16.0.0, ~1.2.3 -> 1.2.3."""
    parts = re.sub(r"^[~^=v>\s]+", "", constraint.strip()).split(".")
    numbers = [part if part.isdigit() else "0" for part in parts[:3]]
    while len(numbers) < 3:
        numbers.append("0")
    return ".".join(numbers)


def stage(source: Path, dest_root: Path) -> Path:
    chart = yaml.safe_load((source / "Chart.yaml").read_text())
    staged = dest_root / chart["name"]
    if staged.exists():
        shutil.rmtree(staged)
    shutil.copytree(source, staged, ignore=shutil.ignore_patterns("charts", "*.tgz", "Chart.lock"))
    for dep in chart.get("dependencies") or []:
        name = dep.get("alias") or dep["name"]
        stub = staged / "charts" / name
        (stub / "templates").mkdir(parents=True)
        (stub / "Chart.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v2",
                    "name": dep["name"],
                    "version": stub_version(str(dep["version"])),
                    "description": f"offline guard standing in for {dep['name']} (renders nothing)",
                }
            )
        )
        condition = dep.get("condition") or f"{name}.enabled"
        (stub / "templates" / "guard.yaml").write_text(
            STUB_TEMPLATE % {"name": name, "condition": condition.split(",")[0]}
        )
    return staged


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write(__doc__ or "")
        return 2
    sys.stdout.write(f"{stage(Path(argv[1]), Path(argv[2]))}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
