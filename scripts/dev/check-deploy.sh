#!/usr/bin/env bash
# Lints what cannot run on a machine without Docker or Kubernetes (not part of the test command):
# - deploy/compose.yaml against the Compose Specification's JSON schema (check-jsonschema's copy);
# - the Helm chart deploy/helm/novapay: with `helm` on PATH, `helm lint` and `helm template` rendered
#   and validated against the Kubernetes schemas (kubernetes-validate); without it (no registry here
#   ships a helm binary), deploy/helm/check_chart.py: Chart.yaml and values.yaml parse, every
#   `.Values.x.y` a template uses exists in values.yaml, and each template's YAML parses once its
#   template actions are blanked out.
# Python tools come from PyPI into a cached virtualenv (NOVAPAY_LINT_VENV, ~/.cache/novapay/deploy-lint).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

venv=${NOVAPAY_LINT_VENV:-$HOME/.cache/novapay/deploy-lint}
if [ ! -x "$venv/bin/check-jsonschema" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check --quiet \
    check-jsonschema==0.39.0 kubernetes-validate==1.37.0 PyYAML==6.0.3
fi

echo "== compose: deploy/compose.yaml against the Compose Specification schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
# Interpolation needs the variables compose would substitute: a file that validates with them set.
"$venv/bin/python" - <<'EOF'
import re, sys, yaml
text = open("deploy/compose.yaml").read()
doc = yaml.safe_load(text)
services = doc["services"]
for name, s in services.items():
    for dep in (s.get("depends_on") or {}):
        assert dep in services, f"{name} depends on unknown service {dep}"
    for v in s.get("volumes") or []:
        src = v.split(":")[0]
        assert src.startswith((".", "/")) or src in doc["volumes"], f"{name}: undeclared volume {src}"
for name in ("novapay", "indexer", "redis", "proxy"):
    assert name in services, f"service {name} missing"
assert services["novapay"]["healthcheck"]["test"][-1].endswith("/health")
assert all(v.endswith(":ro") for v in services["novapay"]["volumes"]), "replicas must mount read-only"
print("compose: services, volumes, health checks and read-only mounts consistent")
EOF

chart=deploy/helm/novapay
echo "== helm: $chart"
if command -v helm >/dev/null; then
  set_args=(--set secrets.apiKeys=lint-key --set redis.password=lint-password
            --set persistence.data.configMap=novapay-kb)
  helm lint "$chart" "${set_args[@]}"
  helm template lint "$chart" "${set_args[@]}" > /tmp/novapay-chart.yaml
  helm template lint "$chart" "${set_args[@]}" --set gpu.enabled=true --set autoscaling.enabled=false \
    --set redis.enabled=false --set redis.externalUrl=redis://redis:6379 --set jobs.index.schedule='0 * * * *' \
    >> /tmp/novapay-chart.yaml
  "$venv/bin/kubernetes-validate" /tmp/novapay-chart.yaml
else
  echo "helm is not installed (no package registry here ships it): static checks only."
  echo "With helm: helm lint $chart --set secrets.apiKeys=K --set redis.password=P --set persistence.data.configMap=kb"
  "$venv/bin/python" deploy/helm/check_chart.py "$chart"
fi
