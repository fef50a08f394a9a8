"""The helm releases skaffold.yaml would deploy, per profile, as `helm template` arguments.

There is no skaffold binary here, so helm-check.sh validates skaffold.yaml by rendering each
release it names: for the base config and for every profile (its JSON patches applied the way
skaffold applies them), print one JSON object per release:

    {"profile": "us", "release": "aether", "chart": "deploy/helm/aether", "namespace": "aether",
     "args": ["-f", "...", "--set", "k=v", ...], "enables": ["postgresql", ...]}

Skaffold's image templates ({{.IMAGE_REPO_x}}, {{.IMAGE_TAG_x}}, {{.IMAGE_DIGEST_x}}) are filled
with stand-ins, checking on the way that every template names a built artifact. `enables` lists
datastore subcharts the release's values turn on (helm-check renders those forced off, and
says so, because the subcharts cannot be downloaded here).

    python deploy/scripts/skaffold_releases.py skaffold.yaml
    python deploy/scripts/skaffold_releases.py --tsv STAGED_CHART_DIR skaffold.yaml
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

DATASTORES = ("postgresql", "redis", "kafka", "mongodb", "elasticsearch", "qdrant", "minio")
TEMPLATE = re.compile(r"\{\{\s*\.(IMAGE_(?:REPO|TAG|DIGEST)_)([A-Za-z0-9_]+)\s*\}\}")
STAND_IN = {
    "IMAGE_REPO_": "registry.local/{image}",
    "IMAGE_TAG_": "0.0.0-skaffold",
    "IMAGE_DIGEST_": "sha256:" + "0" * 64,
}


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]


def apply_patch(doc: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 6902 add / replace / remove, as skaffold applies a profile's patches."""
    *parents, last = _pointer(patch["path"])
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = patch["op"]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, copy.deepcopy(patch["value"]))
        elif op == "replace":
            node[index] = copy.deepcopy(patch["value"])
        elif op == "remove":
            del node[index]
        else:
            raise SystemExit(f"skaffold: unsupported patch op {op!r}")
    else:
        if op in ("add", "replace"):
            if op == "replace" and last not in node:
                raise SystemExit(f"skaffold: replace of missing path {patch['path']}")
            node[last] = copy.deepcopy(patch["value"])
        elif op == "remove":
            del node[last]
        else:
            raise SystemExit(f"skaffold: unsupported patch op {op!r}")


def overlay(base: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(base)
    config.pop("profiles", None)
    for section in ("build", "deploy", "manifests", "test", "portForward"):
        if section in profile:  # a profile's section replaces the base's
            config[section] = copy.deepcopy(profile[section])
    for patch in profile.get("patches", []):
        apply_patch(config, patch)
    return config


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def releases(config: dict[str, Any], profile: str, root: Path) -> list[dict[str, Any]]:
    artifacts = {
        a["image"].replace("-", "_").replace(".", "_").replace("/", "_"): a["image"]
        for a in config.get("build", {}).get("artifacts", [])
    }
    out = []
    for rel in config.get("deploy", {}).get("helm", {}).get("releases", []):
        args: list[str] = []
        enables: set[str] = set()
        for values_file in rel.get("valuesFiles", []):
            path = root / values_file
            if not path.is_file():
                raise SystemExit(f"skaffold ({profile}): values file {values_file} does not exist")
            args += ["-f", str(path)]
            data = yaml.safe_load(path.read_text()) or {}
            enables |= {d for d in DATASTORES if _truthy((data.get(d) or {}).get("enabled"))}
        for key, value in (rel.get("setValues") or {}).items():
            # skaffold passes setValues and setValueTemplates with --set (helm parses types).
            args += ["--set", f"{key}={value}"]
            if key.split(".")[0] in DATASTORES and key.endswith(".enabled") and _truthy(value):
                enables.add(key.split(".")[0])
        for key, value in (rel.get("setValueTemplates") or {}).items():

            def fill(match: re.Match[str]) -> str:
                kind, name = match.group(1), match.group(2)
                if name not in artifacts:
                    raise SystemExit(
                        f"skaffold ({profile}): {match.group(0)} names no artifact "
                        f"(artifacts: {', '.join(sorted(artifacts.values()))})"
                    )
                return STAND_IN[kind].format(image=artifacts[name])

            args += ["--set", f"{key}={TEMPLATE.sub(fill, str(value))}"]
        out.append(
            {
                "profile": profile,
                "release": rel["name"],
                "chart": str(root / rel["chartPath"]),
                "namespace": rel.get("namespace", "default"),
                "args": args,
                "enables": sorted(enables),
            }
        )
    if not out:
        raise SystemExit(f"skaffold ({profile}): no helm release")
    return out


def main(argv: list[str]) -> int:
    # --tsv CHART_DIR: one line per release for helm-check.sh: profile, enabled datastores, then
    # the helm arguments with the chart path replaced by CHART_DIR (the staged offline copy)
    # and every enabled datastore forced off; tab-separated.
    tsv_chart = None
    if len(argv) > 2 and argv[1] == "--tsv":
        tsv_chart, argv = argv[2], [argv[0], *argv[3:]]
    path = Path(argv[1] if len(argv) > 1 else "skaffold.yaml")
    base = yaml.safe_load(path.read_text())
    if base.get("kind") != "Config" or not str(base.get("apiVersion", "")).startswith("skaffold/"):
        raise SystemExit(f"{path}: not a skaffold Config")
    root = path.resolve().parent
    rows = releases(overlay(base, {}), "(base)", root)
    names = [p["name"] for p in base.get("profiles", [])]
    if len(names) != len(set(names)):
        raise SystemExit(f"{path}: duplicate profile names")
    for profile in base.get("profiles", []):
        rows += releases(overlay(base, profile), profile["name"], root)
    for row in rows:
        if tsv_chart is None:
            sys.stdout.write(json.dumps(row) + "\n")
            continue
        args = [a.replace(row["chart"], tsv_chart) for a in row["args"]]
        for datastore in row["enables"]:
            args += ["--set", f"{datastore}.enabled=false"]
        enables = ",".join(row["enables"]) or "-"  # never an empty field: read -a would drop it
        sys.stdout.write("\t".join([row["profile"].strip("()"), enables, *args]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
