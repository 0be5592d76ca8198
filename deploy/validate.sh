#!/usr/bin/env bash
# Offline validation of everything under deploy/ (no cluster, no Docker engine):
#   1. renders every kustomization (each base on its own, both overlays, the collector) with
#      `kubectl kustomize` (or a standalone `kustomize`);
#   2. validates every rendered object against the Kubernetes $K8S_VERSION OpenAPI schemas,
#      strictly (unknown fields are errors), with kubernetes-validate from PyPI;
#   3. checks what schemas cannot (deploy/check-manifests.py): references resolve, hardening,
#      gRPC probes, settings that exist in the code, overlay rules, collector pipelines, and an
#      environment-variable table in deploy/README.md for every variable the services read.
# Any error fails the run. Usage: bash deploy/validate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest Kubernetes the manifests support (preStop sleep is on by default from 1.30).
K8S_VERSION="${K8S_VERSION:-1.30.0}"
KUBERNETES_VALIDATE_VERSION="1.37.0"

if command -v kubectl >/dev/null 2>&1; then
  render() { kubectl kustomize "$1"; }
elif command -v kustomize >/dev/null 2>&1; then
  render() { kustomize build "$1"; }
else
  echo "deploy/validate.sh needs kubectl (or kustomize) to render the manifests" >&2
  exit 1
fi

if ! python3 -c "import kubernetes_validate, sys; sys.exit(kubernetes_validate.__version__ != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

targets=(deploy/k8s/base/*/ deploy/k8s/overlays/*/ deploy/otel-collector/)
rendered=()
checks=()
for target in "${targets[@]}"; do
  target="${target%/}"
  file="$out/$(echo "$target" | tr '/' '_').yaml"
  if ! render "$target" >"$file"; then
    echo "ERROR cannot render $target" >&2
    exit 1
  fi
  rendered+=("$file")
  checks+=("$target=$file")
done

echo "schemas: Kubernetes $K8S_VERSION, strict, ${#rendered[@]} renders"
python3 - "$K8S_VERSION" "${rendered[@]}" <<'PY'
# kubernetes-validate's library, in one process for every render (its CLI would start once per
# file); errors are printed per object and fail the run.
import sys

import kubernetes_validate
import yaml

version, files = sys.argv[1], sys.argv[2:]
failed = 0
for path in files:
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        where = f"{path.rsplit('/', 1)[-1]}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            failed += 1
            print(f"ERROR {where}: {err.path and '.'.join(map(str, err.path)) or ''} {err.message}", file=sys.stderr)
        except Exception as err:  # an unknown kind or version is an error too
            failed += 1
            print(f"ERROR {where}: {err}", file=sys.stderr)
sys.exit(1 if failed else 0)
PY

python3 deploy/check-manifests.py "${checks[@]}"
echo "deploy/ is valid"
