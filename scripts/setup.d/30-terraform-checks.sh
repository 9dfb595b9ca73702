#!/usr/bin/env bash
# What tests/terraform and tests/conformance need besides .venv (idempotent; a re-run with everything present
# installs nothing):
# - Node.js + npm (Debian's packages) when missing (the image ships Node 20);
# - tests/terraform/provider-schemas: @cdktf/provider-aws 21.22.1 (aws 6.25.0), @cdktf/provider-azurerm 14.23.1
#   (azurerm 4.55.0), @cdktf/provider-google 16.12.1 (google 6.50.0), whose .jsii manifests are the provider schemas
#   of the offline schema test (npm ci from the committed lock; --legacy-peer-deps: the cdktf runtime is not needed);
# - tests/conformance: @octopusdeploy/api-client 3.11.0 and @octopusdeploy/message-contracts 1.3.1 (npm ci);
# - checkov 3.3.30 in its own venv .venv/checkov (it pins libraries Airflow's constraints pin differently).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
fi

# npm ci only when node_modules is older than the lock (or missing).
npm_ci() { # DIR EXTRA_ARGS...
  local dir=$1
  shift
  if [ -d "$dir/node_modules" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    return 0
  fi
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error "$@")
}
npm_ci tests/terraform/provider-schemas --legacy-peer-deps
npm_ci tests/conformance

CHECKOV_VERSION=3.3.30
if ! .venv/checkov/bin/checkov --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  python3 -m venv .venv/checkov
  .venv/checkov/bin/python -m pip install -q "checkov==$CHECKOV_VERSION"
fi
