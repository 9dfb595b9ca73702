#!/usr/bin/env bash
# Sets everything up, then runs lint and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
exec python -m pytest "$@"
