#!/usr/bin/env bash
# Creates .venv with the pinned dependencies (idempotent). Needs python3 (>=3.10) and terraform (>=1.5) on PATH.
# Then runs every scripts/setup.d/*.sh in name order (system packages the tests need: each is idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
command -v terraform >/dev/null || { echo "terraform (>=1.5) is required on PATH" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-dev.txt -c constraints.txt
  rm -f .venv/.installed-*
  touch "$stamp"
fi
for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  bash "$step"
done
