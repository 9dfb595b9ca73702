#!/usr/bin/env bash
# Sets everything up, then runs the main job on the embedded local cloud (see scripts/demo.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
