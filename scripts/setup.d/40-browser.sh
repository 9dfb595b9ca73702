#!/usr/bin/env bash
# Headless Chromium from Debian's packages for the browser tests of the Airflow UI (tests/ui). Playwright (PyPI,
# in .venv) drives this executable; it never downloads a browser of its own (no `playwright install`).
# Idempotent: nothing to do once /usr/bin/chromium exists. Without root the tests skip, saying why.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup.d/40-browser: need root to install chromium (apt-get); tests/ui will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# fonts-liberation: readable text in the screenshots (the package alone may fall back to a bitmap font).
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
