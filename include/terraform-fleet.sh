#!/usr/bin/env bash
# Runs one cloud's fleet module (include/terraform/$CLOUD): init, then apply | plan | destroy | plan-destroy,
# in a fresh working copy per call, so retries and parallel clouds never share a .terraform folder, while the
# state lives outside it and persists across runs and tries (a re-run of an unchanged fleet is a no-op).
#
# Environment in:
#   CLOUD                                  aws | azure | gcp | local
#   TF_ACTION                              apply | plan | destroy | plan-destroy
#   TF_VAR_*                               the module's inputs (the DAG sets the shared contract)
#   OCTOPUS_WORKERS_INCLUDE_DIR            this package's include/ (default: this script's folder)
#   OCTOPUS_WORKERS_STATE_DIR              root of local state (default: $AIRFLOW_HOME/octopus-workers-state)
#   OCTOPUS_TF_BACKEND_<CLOUD>             backend type for that cloud (default: local, under the state dir)
#   OCTOPUS_TF_BACKEND_CONFIG_<CLOUD>      file passed as -backend-config for a non-local backend
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

include_dir="${OCTOPUS_WORKERS_INCLUDE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
[ -d "$include_dir/terraform/$CLOUD" ] || die "no module at $include_dir/terraform/$CLOUD"
state_root="${OCTOPUS_WORKERS_STATE_DIR:-${AIRFLOW_HOME:-$HOME/airflow}/octopus-workers-state}"
mkdir -p "$state_root/$CLOUD" "$state_root/plugin-cache"

work="$(mktemp -d "${TMPDIR:-/tmp}/octopus-tf-$CLOUD-XXXXXX")"
trap 'rm -rf "$work"' EXIT
# Copy the whole include/ tree: modules refer to ../../configure-tentacle.sh.
(cd "$include_dir" && tar --exclude='.terraform' --exclude='*.tfstate*' --exclude='.terraform.lock.hcl' -cf - .) |
  (cd "$work" && tar -xf -)
module="$work/terraform/$CLOUD"

export TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1
export TF_DATA_DIR="$work/.terraform-data"
export TF_PLUGIN_CACHE_DIR="${TF_PLUGIN_CACHE_DIR:-$state_root/plugin-cache}"

upper="$(printf '%s' "$CLOUD" | tr '[:lower:]' '[:upper:]')"
backend_var="OCTOPUS_TF_BACKEND_$upper"
backend_config_var="OCTOPUS_TF_BACKEND_CONFIG_$upper"
backend="${!backend_var:-local}"
init_args=(-input=false -no-color)
if [ "$backend" = local ]; then
  printf 'terraform {\n  backend "local" {\n    path = "%s"\n  }\n}\n' "$state_root/$CLOUD/terraform.tfstate" \
    >"$module/backend_override.tf"
else
  printf 'terraform {\n  backend "%s" {}\n}\n' "$backend" >"$module/backend_override.tf"
  backend_config="${!backend_config_var:-}"
  if [ -n "$backend_config" ]; then
    [ -f "$backend_config" ] || die "$backend_config_var names a missing file: $backend_config"
    init_args+=("-backend-config=$backend_config")
  fi
fi

cd "$module"
echo "terraform-fleet: $TF_ACTION $CLOUD (backend $backend)" >&2
terraform init "${init_args[@]}" >&2

plan_args=(-input=false -no-color -lock-timeout=5m -out="$work/tfplan")
case "$TF_ACTION" in
  destroy|plan-destroy) plan_args+=(-destroy) ;;
esac
terraform plan "${plan_args[@]}" >&2
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
  apply|destroy) terraform apply -input=false -no-color -lock-timeout=5m "$work/tfplan" >&2 ;;
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
