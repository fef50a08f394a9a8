"""Validate rendered manifests offline; fail on anything that no schema covers.

    python deploy/scripts/validate_manifests.py --k8s 1.33.0 --schemas deploy/schemas RENDERED.yaml

- Kubernetes' own kinds: `kubernetes-validate --strict -k <version>` (its bundled schemas).
  It only WARNs "Couldn't find schema" for a kind it does not know; that is a failure here.
- Custom resources (no bundled schema): listed by kind below, each validated with
  `check-jsonschema` against the small schema vendored in deploy/schemas/. A custom kind
  missing from that list fails, so nothing is skipped silently.
- Every object must have a name, and no two objects may share kind + namespace + name.

Runs with the tools venv that helm-check.sh installs (kubernetes-validate, check-jsonschema
and PyYAML beside this interpreter).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

# (apiVersion, kind) -> schema file in deploy/schemas. Only these custom kinds may appear.
CUSTOM_SCHEMAS: dict[tuple[str, str], str] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("external-secrets.io/v1", "ExternalSecret"): "externalsecret.json",
    ("kafka.strimzi.io/v1beta2", "KafkaMirrorMaker2"): "kafkamirrormaker2.json",
}


def say(message: str) -> None:
    sys.stdout.write(f"{message}\n")


def tool(name: str) -> str:
    """A console script installed beside this interpreter (the tools venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"validate: {name} not found beside {sys.executable} nor on PATH")
    return found


def load(path: Path) -> list[dict[str, object]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for doc in docs:
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            raise SystemExit(f"validate: {path}: a document without apiVersion/kind: {doc!r:.200}")
    return docs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s", default="1.33.0", help="Kubernetes version of the schemas")
    parser.add_argument("--schemas", type=Path, required=True, help="vendored CRD schemas")
    parser.add_argument("rendered", type=Path, nargs="+")
    args = parser.parse_args()

    failed = False
    summaries: dict[Path, tuple[int, Counter[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="aether-validate-") as tmp:
        tmpdir = Path(tmp)
        core_files: dict[Path, Path] = {}
        by_kind: dict[tuple[str, str], list[Path]] = {}
        for number, path in enumerate(args.rendered):
            docs = load(path)
            label = f"{path.parent.name}/{path.name}"
            keys = Counter(
                (
                    d["kind"],
                    (d.get("metadata") or {}).get("namespace", ""),
                    (d.get("metadata") or {}).get("name"),
                )  # type: ignore[union-attr]
                for d in docs
            )
            for (kind, namespace, name), count in keys.items():
                if not name:
                    say(f"FAIL {label}: a {kind} without metadata.name")
                    failed = True
                elif count > 1:
                    say(f"FAIL {label}: {count} objects named {kind} {namespace}/{name}")
                    failed = True
            core = [d for d in docs if (d["apiVersion"], d["kind"]) not in CUSTOM_SCHEMAS]
            custom = [d for d in docs if (d["apiVersion"], d["kind"]) in CUSTOM_SCHEMAS]
            if core:
                core_file = tmpdir / f"{number:02d}-{path.parent.name}-{path.stem}.yaml"
                core_file.write_text(yaml.safe_dump_all(core, sort_keys=False))
                core_files[core_file] = path
            for index, doc in enumerate(custom):
                key = (str(doc["apiVersion"]), str(doc["kind"]))
                target = (
                    tmpdir
                    / f"{number:02d}-{path.parent.name}-{path.stem}-{index}-{doc['kind']}.json"
                )
                target.write_text(json.dumps(doc))
                by_kind.setdefault(key, []).append(target)
            summaries[path] = (len(core), Counter(str(d["kind"]) for d in custom))

        # One kubernetes-validate run for every render (it names the file in each line).
        if core_files:
            result = subprocess.run(
                [
                    tool("kubernetes-validate"),
                    "--strict",
                    "-k",
                    args.k8s,
                    "--quiet",
                    *map(str, core_files),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            output = (result.stdout + result.stderr).strip()
            unknown = "Couldn't find schema" in output
            if result.returncode != 0 or unknown:
                failed = True
                say(f"FAIL kubernetes-validate --strict -k {args.k8s}")
                for line in output.splitlines():
                    for core_file, source in core_files.items():
                        line = line.replace(str(core_file), str(source))
                    say(f"  {line}")
                if unknown:
                    say(
                        "  (a kind with no bundled schema: add a vendored schema to "
                        "CUSTOM_SCHEMAS in deploy/scripts/validate_manifests.py)"
                    )
        # One check-jsonschema run per custom kind.
        for (api_version, kind), files in sorted(by_kind.items()):
            schema = args.schemas / CUSTOM_SCHEMAS[(api_version, kind)]
            result = subprocess.run(
                [tool("check-jsonschema"), "--schemafile", str(schema), *map(str, files)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                failed = True
                say(f"FAIL {kind} against {schema}")
                say("\n".join(f"  {line}" for line in (result.stdout + result.stderr).splitlines()))

    for path, (core_count, kinds) in summaries.items():
        excluded = ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items())) or "none"
        say(
            f"{path.parent.name}/{path.name}: {core_count} objects with kubernetes-validate "
            f"{args.k8s} --strict; custom resources, excluded from it and checked with "
            f"check-jsonschema against deploy/schemas: {excluded}"
        )
    say("validation " + ("FAILED" if failed else f"ok: {len(summaries)} render(s)"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
