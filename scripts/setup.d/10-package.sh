#!/usr/bin/env bash
# Installs this repository into .venv as a package (editable: the code stays under plugins/), so Airflow finds
# its provider through the `apache_airflow_provider` entry point: the `octopus` connection type and its form.
# Dependencies are not touched (--no-deps): scripts/setup.sh installed them, pinned by constraints.txt.
# Idempotent: skipped while the installed metadata is newer than pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/../.."
dist_info=$(compgen -G '.venv/lib/python3*/site-packages/octopus_shared_workers-*.dist-info' | head -n 1 || true)
if [ -n "$dist_info" ] && [ "$dist_info" -nt pyproject.toml ] \
  && .venv/bin/python -c 'import octopus.provider_info' 2>/dev/null; then
  exit 0
fi
# The build backend (setuptools, from pyproject's [build-system]) comes from the package index in an isolated env.
.venv/bin/python -m pip install -q --no-deps --editable .
