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
#   TF_VAR_surge_instances                 set here for aws, azure and gcp (not read from the environment): the
#                                          outdated instances still in the group (see "Rebuild without a gap")
#   TF_VAR_remove_instances                JSON list of worker names the package removes in this run (drained
#                                          first): the local module drops them itself; for aws, azure and gcp this
#                                          script removes each through the cloud's API (remove-instance.sh, one less
#                                          in the group each) before the plan, on apply only
#   OCTOPUS_TF_ALLOW_UNNAMED_REMOVAL       true: let an apply lower a cloud group's size without named instances,
#                                          or replace the group (the cloud picks; only for a fleet known to be idle)
# The package picks every instance that leaves (include/terraform/README.md, "Who removes an instance"): for
# aws, azure and gcp an apply is refused before anything changes when instance_count is lower than the fleet minus
# the instances named, and after the plan when the plan would lower the group's size or replace the group or a
# live instance (include/terraform/README.md, "Rebuild without a gap": outdated instances stay until named).
# Out: Terraform's own output, then one last line of compact JSON (the task's XCom), with "removed": the named
# instances this run took out of the fleet ([] unless an apply removed some):
#   {"cloud": ..., "action": ..., "changes": {"create": n, ...}, "instances_before": [...] | null,
#    "outputs": {...}}  (sensitive outputs dropped; instances_before: the state's instances output before this run)
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

# ---- Named removal: the package picks every instance that leaves, never the cloud ----
remove_json="${TF_VAR_remove_instances:-[]}"
remove_lines="$("$PY" -c '
import json, sys
try:
    names = json.loads(sys.argv[1])
except ValueError:
    names = None
if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
    sys.exit(1)
print("\n".join(dict.fromkeys(names)))' "$remove_json")" ||
  die "TF_VAR_remove_instances must be a JSON list of worker names, e.g. [\"$name_prefix-1\"], not: $remove_json"
remove_names=()
[ -z "$remove_lines" ] || mapfile -t remove_names <<<"$remove_lines"
allow_unnamed="$(printf '%s' "${OCTOPUS_TF_ALLOW_UNNAMED_REMOVAL:-false}" | tr '[:upper:]' '[:lower:]')"
case "$allow_unnamed" in true|1|yes|on) allow_unnamed=true ;; *) allow_unnamed=false ;; esac

# What the state says the fleet is now (nothing before the first apply): its size, where it is, and its names.
state_outputs="$(terraform output -json 2>/dev/null)" || state_outputs='{}'
state_summary="$(printf '%s' "$state_outputs" | "$PY" -c '
import json, sys
try:
    out = {k: v.get("value") for k, v in (json.load(sys.stdin) or {}).items()}
except ValueError:
    out = {}
named = set(json.loads(sys.argv[1]))
names = [str(i.get("name")) for i in out.get("instances") or [] if isinstance(i, dict)]
outdated = {str(n) for n in out.get("outdated_instances") or []}
count = out.get("instance_count")
if "instances" in out:  # the current instances (not outdated) the apply would keep unless named
    count = len([n for n in names if n not in outdated])
print(str(count) if isinstance(count, int) else "-")
print(out.get("fleet_id") or "-")
print(len(set(names) & named - outdated))
print(json.dumps(names, separators=(",", ":")))
print(len(outdated - named))' "$remove_json")"
{ read -r state_count; read -r fleet_id; read -r named_in_fleet; read -r names_before; read -r surge; } <<<"$state_summary"
removal='{"removed":[],"absent":[]}'

if [ "$CLOUD" != local ] && [ "$TF_ACTION" = apply ]; then
  target="${TF_VAR_instance_count:-0}"
  if [ "$allow_unnamed" != true ] && [ "$state_count" != - ] && [[ "$target" =~ ^[0-9]+$ ]] &&
    ((state_count - named_in_fleet > target)); then
    die "refusing to lower the $CLOUD fleet of deployment $prefix from $state_count current instances to $target with" \
      "$named_in_fleet of them named: the cloud would pick which to remove, busy or not. Name the" \
      "$((state_count - target)) instances the package has drained in remove_instances (TF_VAR_remove_instances)," \
      "or set OCTOPUS_TF_ALLOW_UNNAMED_REMOVAL=true for a fleet known to be idle. Nothing was changed."
  fi
  if [ "${#remove_names[@]}" -gt 0 ]; then
    if [ "$fleet_id" = - ]; then
      echo "terraform-fleet: no $CLOUD fleet in the state yet, so none of ${remove_names[*]} is ours to remove" >&2
    else
      removal="$(CLOUD="$CLOUD" FLEET_ID="$fleet_id" NAME_PREFIX="$name_prefix" OCTOPUS_PYTHON="$PY" \
        bash "$include_dir/remove-instance.sh" "${remove_names[@]}" | tail -n 1)"
    fi
  fi
elif [ "${#remove_names[@]}" -gt 0 ] && [ "$CLOUD" != local ]; then
  case "$TF_ACTION" in
    plan) echo "terraform-fleet: dry run: an apply would first remove ${remove_names[*]} through the $CLOUD API" \
      "(one less in the group each); this plan does not include that" >&2 ;;
    *) echo "terraform-fleet: $TF_ACTION: remove_instances (${remove_names[*]}) is ignored, every instance goes" >&2 ;;
  esac
fi

# Rebuild without a gap (include/terraform/README.md): an outdated instance (outputs.outdated_instances, built from
# an older configuration) is never replaced in place; a cloud group holds instance_count current instances plus the
# outdated ones still there (TF_VAR_surge_instances), until the package has drained them and names them here.
# The local module counts its outdated instances itself.
plan_and_apply() {
  local plan_args=(-input=false -no-color -lock-timeout="$lock_timeout" -out="$work/tfplan")
  case "$TF_ACTION" in
    destroy|plan-destroy) plan_args+=(-destroy) ;;
  esac
  [ "$CLOUD" = local ] || export TF_VAR_surge_instances="$surge"
  tf plan "${plan_args[@]}"
  terraform show -json "$work/tfplan" >"$work/plan.json"
  # The instances the state held before this run: the wait tells an instance this apply created from one it kept.
  [ -n "${instances_before:-}" ] || instances_before="$("$PY" -c '
import json, sys
prior = (json.load(sys.stdin).get("prior_state") or {}).get("values") or {}
instances = (prior.get("outputs") or {}).get("instances")
print(json.dumps(instances["value"] if instances else None, separators=(",", ":")))' <"$work/plan.json")"
  changes="$("$PY" -c '
import collections, json, sys
plan = json.load(sys.stdin)
counts = collections.Counter(json.loads(sys.argv[1]))
for change in plan.get("resource_changes", []):
    for action in change["change"]["actions"]:
        if action != "no-op" and action != "read":
            counts[action] += 1
print(json.dumps(dict(sorted(counts.items())), separators=(",", ":")))' "$changes" <"$work/plan.json")"

  # Whatever the state said, the plan is what would happen: it must not let the cloud pick, nor replace the group
  # or a live instance (Terraform would stop it under a running step).
  if [ "$TF_ACTION" = apply ] && [ "$allow_unnamed" != true ]; then
    local unnamed
    unnamed="$("$PY" -c '
import json, sys
cloud = sys.argv[1]
SIZE = {"aws_autoscaling_group": "desired_capacity", "azurerm_linux_virtual_machine_scale_set": "instances",
        "google_compute_region_instance_group_manager": "target_size"}
INSTANCE = {"aws_instance", "azurerm_linux_virtual_machine", "azurerm_virtual_machine", "google_compute_instance",
            "google_compute_instance_from_template"}
for rc in json.load(sys.stdin).get("resource_changes", []):
    if rc.get("mode") != "managed":
        continue
    actions, before, after = rc["change"]["actions"], rc["change"].get("before") or {}, rc["change"].get("after") or {}
    kind = rc.get("type")
    if kind in INSTANCE or (kind == "terraform_data" and rc.get("name") == "tentacle"):
        if "delete" in actions and "create" in actions:
            print(rc["address"], "(a live instance) would be replaced in place, stopping it under whatever runs on",
                  "it; an outdated instance must stay until the package has drained it and names it;")
        continue
    size = SIZE.get(kind)
    if size is None or cloud == "local":
        continue
    if "delete" in actions:
        how = "replaced" if "create" in actions else "destroyed"
        print(rc["address"], f"would be {how}, and every instance in it with it, drained or not;")
    elif "update" in actions and isinstance(before.get(size), int) and isinstance(after.get(size), int) \
            and after[size] < before[size]:
        print(rc["address"], f"{size} would go from {before[size]} to {after[size]}, and the cloud would pick which",
              f"{before[size] - after[size]} instance(s) to remove, busy or not;")' "$CLOUD" <"$work/plan.json")"
    if [ -n "$unnamed" ]; then
      local done_so_far="Nothing was changed."
      [ "$(printf '%s' "$removal" | "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)["removed"]))')" = 0 ] ||
        done_so_far="Only the named instances were removed: $removal."
      [ "$applies" = 0 ] || done_so_far="The first apply of this run went through (surge $surge)."
      die "refusing to apply the plan for deployment $prefix:" "$unnamed" "name the instances the package has" \
        "drained in remove_instances (TF_VAR_remove_instances), retire the fleet to remove it, or set" \
        "OCTOPUS_TF_ALLOW_UNNAMED_REMOVAL=true for a fleet known to be idle. $done_so_far"
    fi
  fi

  case "$TF_ACTION" in
    apply|destroy) tf apply -input=false -no-color -lock-timeout="$lock_timeout" "$work/tfplan" ;;
  esac
  applies=$((applies + 1))
}

applies=0 changes='{}' instances_before=''
plan_and_apply
[ "$TF_ACTION" != apply ] || outputs_json="$(terraform output -json)"
if [ "$TF_ACTION" = apply ] && [ "$CLOUD" != local ]; then
  # The apply may just have made instances outdated (a new template or model reaches no running instance): the
  # group must then grow by as many, so that instance_count current instances run beside them. At most twice more.
  for _ in 1 2; do
    wanted="$(printf '%s' "$outputs_json" | "$PY" -c '
import json, sys
out = {k: v.get("value") for k, v in json.load(sys.stdin).items()}
print(len({str(n) for n in out.get("outdated_instances") or []} - set(json.loads(sys.argv[1]))))' "$remove_json")"
    [ "$wanted" -gt "$surge" ] || break
    echo "terraform-fleet: $wanted $CLOUD instances are outdated: growing the group to instance_count + $wanted" \
      "so the new instances run beside them (the package drains and removes the outdated ones by name)" >&2
    surge="$wanted"
    plan_and_apply
    outputs_json="$(terraform output -json)"
  done
fi

removed='[]'

if [ "$TF_ACTION" = apply ]; then
  outputs="$(printf '%s' "$outputs_json" | "$PY" -c '
import json, sys
print(json.dumps({k: v["value"] for k, v in json.load(sys.stdin).items() if not v.get("sensitive")},
                 separators=(",", ":"), sort_keys=True))')"
  # Every named instance must be gone now; removed: those this run took out (in the fleet before, not after).
  removed="$("$PY" -c '
import json, sys
outputs, names, before, removal = (json.loads(a) for a in sys.argv[1:5])
after = {str(i.get("name")) for i in outputs.get("instances") or [] if isinstance(i, dict)}
left = [n for n in names if n in after]
if left:
    sys.exit("terraform-fleet: named for removal but still in the fleet after the apply: " + ", ".join(left))
was = set(before) | set(removal.get("removed") or [])
print(json.dumps([n for n in names if n in was], separators=(",", ":")))' \
    "$outputs" "$remove_json" "$names_before" "$removal")"
else
  outputs='{}'
fi
printf '{"cloud":"%s","action":"%s","changes":%s,"instances_before":%s,"outputs":%s,"removed":%s}\n' \
  "$CLOUD" "$TF_ACTION" "$changes" "$instances_before" "$outputs" "$removed"
