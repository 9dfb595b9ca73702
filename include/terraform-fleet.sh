#!/usr/bin/env bash
# Runs one cloud's fleet module (include/terraform/$CLOUD): init, then apply | plan | destroy | plan-destroy,
# in a fresh working copy per call, so retries and parallel clouds never share a .terraform folder, while the
# state lives outside it and persists across runs and tries (a re-run of an unchanged fleet is a no-op).
# A deployment is (DEPLOYMENT_PREFIX, CLOUD): its state is keyed by both, so deployments never share a state.
#
# Environment in:
#   CLOUD                                  aws | azure | gcp | local
#   TF_ACTION                              apply | plan | destroy | plan-destroy
#   DEPLOYMENT_PREFIX                      the name_prefix param (default: TF_VAR_name_prefix without "-$CLOUD")
#   TF_VAR_*                               the module's inputs (the DAG sets the shared contract)
#   OCTOPUS_WORKERS_INCLUDE_DIR            this package's include/ (default: this script's folder)
#   OCTOPUS_WORKERS_STATE_DIR              root of local state (default: $AIRFLOW_HOME/octopus-workers-state);
#                                          the state is $OCTOPUS_WORKERS_STATE_DIR/<prefix>/<cloud>/terraform.tfstate
#   OCTOPUS_TF_BACKEND_<CLOUD>             backend type for that cloud (default: local, under the state dir);
#                                          any other backend uses the Terraform workspace <prefix>
#   OCTOPUS_TF_BACKEND_CONFIG_<CLOUD>      file passed as -backend-config for a non-local backend
#   OCTOPUS_TF_LOCK_TIMEOUT                how long to wait for the state lock (default 5m)
# Out: Terraform's own output, then one last line of compact JSON (the task's XCom):
#   {"cloud": ..., "action": ..., "changes": {"create": n, ...}, "outputs": {...}}  (sensitive outputs dropped)
set -euo pipefail

die() { echo "terraform-fleet: $*" >&2; exit 1; }

: "${CLOUD:?CLOUD is required (aws, azure, gcp or local)}"
: "${TF_ACTION:?TF_ACTION is required (apply, plan, destroy or plan-destroy)}"
case "$CLOUD" in aws|azure|gcp|local) ;; *) die "unknown cloud '$CLOUD'";; esac
case "$TF_ACTION" in apply|plan|destroy|plan-destroy) ;; *) die "unknown action '$TF_ACTION'";; esac
command -v terraform >/dev/null || die "terraform is not on PATH of this Airflow worker"
PY="${OCTOPUS_PYTHON:-python3}"

# terraform "$@" with its output on stderr (stdout carries only the result line); on failure, a lost state
# lock is explained: who holds it and how to release it.
tf() {
  local log="$work/terraform-$1.log" rc=0
  terraform "$@" 2>&1 | tee "$log" >&2 || rc=$?
  if [ "$rc" != 0 ]; then
    grep -q 'Error acquiring the state lock' "$log" && explain_lock "$log"
    exit "$rc"
  fi
}

explain_lock() {
  local id
  id="$(sed -n 's/^[[:space:]]*ID:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$1" | head -1)"
  if [ "$backend" = pg ]; then
    # pg's locks are advisory locks of the holder's database session: Terraform's "Lock Info" shows this
    # call's own request, and `terraform force-unlock` cannot end another session's lock.
    "$PY" - "$prefix" "$backend_config" <<'PYEOF' >&2 || true
import os, re, sys
prefix, config = sys.argv[1], sys.argv[2]
text = open(config).read() if config else ""
def setting(name, env, default=""):
    found = re.search(r'^\s*%s\s*=\s*"([^"]*)"' % name, text, re.M)
    return found.group(1) if found else os.environ.get(env, default)
conn_str, schema = setting("conn_str", "PG_CONN_STR"), setting("schema_name", "PG_SCHEMA_NAME", "terraform_remote_state")
query = ("SELECT l.pid, coalesce(host(a.client_addr), 'local socket'), a.backend_start, s.id FROM "
         '"%s".states s JOIN pg_locks l ON l.locktype = \'advisory\' AND l.granted AND l.objid = s.id::oid '
         "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE s.name = %%s" % schema.replace('"', ""))
release = "SELECT pg_terminate_backend(<pid>)"
try:
    import psycopg2
    with psycopg2.connect(conn_str, connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute(query, (prefix,))
        rows = cur.fetchall()
except Exception as exc:  # noqa: BLE001 - a diagnosis only; never print conn_str
    rows, why = None, type(exc).__name__
if rows:
    pid, client, since, row = rows[0]
    print(f"terraform-fleet: the state lock of deployment {prefix} (pg workspace {prefix}, states row {row}) is "
          f"held by Postgres session {pid} (client {client}, connected {since}); lock id: pg-session-{pid}.")
    release = f"SELECT pg_terminate_backend({pid})"
else:
    print(f"terraform-fleet: the state lock of deployment {prefix} (pg workspace {prefix}) is held by another "
          "database session" + ("" if rows is not None else f" (could not look it up: {why})") + ".")
print("terraform-fleet: a pg lock lives as long as the session that took it: a killed Terraform releases it, a hung "
      "one (or a worker lost without closing its connection) keeps it. If no terraform_apply/terraform_destroy of "
      f"this deployment is still running, release it as the backend's database user with: {release};"
      " (terraform force-unlock cannot release another session's pg lock). Then clear the task.")
PYEOF
  else
    echo "terraform-fleet: the state of deployment $prefix ($CLOUD, backend $backend, $where) is locked" \
      "by another Terraform run; lock id: ${id:-unknown} (Lock Info above). If no terraform_apply/terraform_destroy" \
      "of this deployment is still running, release it from a working copy of include/terraform/$CLOUD" \
      "initialised with the same backend${backend_config:+ config} (workspace $prefix unless local):" \
      "terraform force-unlock -force ${id:-<ID>}; then clear the task." >&2
  fi
}

# Earlier versions kept local state per cloud only ($state_root/<cloud>/terraform.tfstate). It becomes this
# deployment's only if it says so (its name_prefix output); anything else is left where it is, and said so.
migrate_legacy_local_state() {
  local legacy="$state_root/$CLOUD/terraform.tfstate" owner
  [ -f "$legacy" ] && [ ! -e "$state_file" ] || return 0
  owner="$("$PY" -c '
import json, sys
print(((json.load(open(sys.argv[1])).get("outputs") or {}).get("name_prefix") or {}).get("value") or "")' "$legacy")"
  if [ "$owner" = "$name_prefix" ]; then
    mv "$legacy" "$state_file"
    [ ! -f "$legacy.backup" ] || mv "$legacy.backup" "$state_file.backup"
    echo "terraform-fleet: moved the legacy state $legacy (name_prefix $owner) to $state_file" >&2
  else
    echo "terraform-fleet: left the legacy state $legacy in place: it belongs to name_prefix" \
      "'${owner:-unknown}', not '$name_prefix'" >&2
  fi
}

# Non-local backends: one workspace per deployment. The first time, a default-workspace state of this very
# deployment (an earlier version's) is copied into it; the default workspace is left as it was.
select_workspace() {
  if terraform workspace list -no-color 2>/dev/null | sed 's/^[* ]*//' | grep -qxF -- "$prefix"; then
    tf workspace select -no-color "$prefix"
    return
  fi
  local owner
  owner="$(terraform output -json 2>/dev/null | "$PY" -c '
import json, sys
try:
    print((json.load(sys.stdin).get("name_prefix") or {}).get("value") or "")
except ValueError:
    print("")')"
  if [ "$owner" = "$name_prefix" ]; then
    terraform state pull >"$work/default.tfstate"
    tf workspace new -no-color -lock-timeout="$lock_timeout" -state="$work/default.tfstate" "$prefix"
    echo "terraform-fleet: copied the default workspace's state (name_prefix $owner) into workspace $prefix;" \
      "the default workspace still holds its copy" >&2
  else
    tf workspace select -or-create -no-color "$prefix"
  fi
}

include_dir="${OCTOPUS_WORKERS_INCLUDE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
[ -d "$include_dir/terraform/$CLOUD" ] || die "no module at $include_dir/terraform/$CLOUD"
name_prefix="${TF_VAR_name_prefix:?TF_VAR_name_prefix is required}"
prefix="${DEPLOYMENT_PREFIX:-${name_prefix%-"$CLOUD"}}"
[[ "$prefix" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] ||
  die "deployment prefix '$prefix' must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
lock_timeout="${OCTOPUS_TF_LOCK_TIMEOUT:-5m}"
state_root="${OCTOPUS_WORKERS_STATE_DIR:-${AIRFLOW_HOME:-$HOME/airflow}/octopus-workers-state}"
mkdir -p "$state_root/plugin-cache"

work="$(mktemp -d "${TMPDIR:-/tmp}/octopus-tf-$CLOUD-XXXXXX")"
trap 'rm -rf "$work"' EXIT
# Copy the whole include/ tree: modules refer to ../../configure-tentacle.sh.
(cd "$include_dir" && tar --exclude='.terraform' --exclude='*.tfstate*' --exclude='.terraform.lock.hcl' -cf - .) |
  (cd "$work" && tar -xf -)
module="$work/terraform/$CLOUD"

export TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1
export TF_DATA_DIR="$work/.terraform-data"
unset TF_WORKSPACE  # the deployment chooses the workspace
export TF_PLUGIN_CACHE_DIR="${TF_PLUGIN_CACHE_DIR:-$state_root/plugin-cache}"

upper="$(printf '%s' "$CLOUD" | tr '[:lower:]' '[:upper:]')"
backend_var="OCTOPUS_TF_BACKEND_$upper"
backend_config_var="OCTOPUS_TF_BACKEND_CONFIG_$upper"
backend="${!backend_var:-local}"
init_args=(-input=false -no-color)
backend_config=""
if [ "$backend" = local ]; then
  state_file="$state_root/$prefix/$CLOUD/terraform.tfstate"
  mkdir -p "$(dirname "$state_file")"
  migrate_legacy_local_state
  printf 'terraform {\n  backend "local" {\n    path = "%s"\n  }\n}\n' "$state_file" >"$module/backend_override.tf"
  where="$state_file"
else
  printf 'terraform {\n  backend "%s" {}\n}\n' "$backend" >"$module/backend_override.tf"
  backend_config="${!backend_config_var:-}"
  if [ -n "$backend_config" ]; then
    [ -f "$backend_config" ] || die "$backend_config_var names a missing file: $backend_config"
    init_args+=("-backend-config=$backend_config")
  fi
  where="workspace $prefix"
fi

cd "$module"
echo "terraform-fleet: $TF_ACTION $CLOUD for deployment $prefix (backend $backend, $where)" >&2
tf init "${init_args[@]}"
[ "$backend" = local ] || select_workspace

plan_args=(-input=false -no-color -lock-timeout="$lock_timeout" -out="$work/tfplan")
case "$TF_ACTION" in
  destroy|plan-destroy) plan_args+=(-destroy) ;;
esac
tf plan "${plan_args[@]}"
changes="$(terraform show -json "$work/tfplan" | "$PY" -c '
import collections, json, sys
plan = json.load(sys.stdin)
counts = collections.Counter()
for change in plan.get("resource_changes", []):
    for action in change["change"]["actions"]:
        if action != "no-op" and action != "read":
            counts[action] += 1
print(json.dumps(dict(sorted(counts.items())), separators=(",", ":")))')"

case "$TF_ACTION" in
  apply|destroy) tf apply -input=false -no-color -lock-timeout="$lock_timeout" "$work/tfplan" ;;
esac

if [ "$TF_ACTION" = apply ]; then
  outputs="$(terraform output -json | "$PY" -c '
import json, sys
print(json.dumps({k: v["value"] for k, v in json.load(sys.stdin).items() if not v.get("sensitive")},
                 separators=(",", ":"), sort_keys=True))')"
else
  outputs='{}'
fi
printf '{"cloud":"%s","action":"%s","changes":%s,"outputs":%s}\n' "$CLOUD" "$TF_ACTION" "$changes" "$outputs"
