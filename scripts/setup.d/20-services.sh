#!/usr/bin/env bash
# Services of the distributed suite (tests/distributed): PostgreSQL (Airflow's metadata database and Terraform's
# pg backend) and Redis (the Celery broker), from Debian's packages; a system user to run postgres as (it refuses
# root). Idempotent: a re-run with everything present installs nothing. The suite starts and stops its own
# throwaway servers: the packages' own services are not used (and not started here).
set -euo pipefail

PG_USER="${OCTOPUS_PG_USER:-octopus-pg}"

have_postgres() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
have_redis() { command -v redis-server >/dev/null; }

missing=()
have_postgres || missing+=(postgresql)
have_redis || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup.d/20-services: need root to install ${missing[*]} (apt-get); tests/distributed will skip" >&2
    exit 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: the packages' own services must not start (the suite runs its own, on free ports).
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$created_policy" = 1 ] && rm -f "$policy"
fi

if [ "$(id -u)" = 0 ] && ! id -u "$PG_USER" >/dev/null 2>&1; then
  useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin "$PG_USER"
fi
