#!/usr/bin/env bash
# Removes named instances of one cloud fleet through the cloud's own API, one less in the group for each: the only
# way an aws, azure or gcp instance of this package leaves (include/terraform/README.md, "Who removes an
# instance"). The package names them after draining them; the cloud never picks. terraform-fleet.sh calls it for
# the module input remove_instances before the plan, so Terraform finds the group already at its new size.
#
#   remove-instance.sh NAME...        NAME: a worker name, as in the module's `instances` output
#
# Environment in:
#   CLOUD                      aws | azure | gcp (the local cloud removes named instances in Terraform itself)
#   FLEET_ID                   the module's fleet_id output: ASG ARN, scale set resource id, or MIG id
#   NAME_PREFIX                the module's name_prefix (each instance's worker name is derived from it, as the
#                              module and configure-tentacle.sh derive it)
#   OCTOPUS_TF_REMOVE_TIMEOUT  seconds to wait for a MIG to be stable after deleteInstances (default 900)
#   OCTOPUS_PYTHON             python3 that reads the CLIs' JSON (default python3)
# Credentials: the cloud CLI's own (the Airflow worker's AWS_*, ARM_*/AZURE_* or GOOGLE_*/CLOUDSDK_* settings).
#
# Only instances that are members of that group now are removed; a name that is not (already removed, or never
# ours) is reported as absent, so a retry is safe. Per cloud:
#   aws    set-instance-protection --no-protected-from-scale-in, then terminate-instance-in-auto-scaling-group
#          --should-decrement-desired-capacity (each instance)
#   azure  vmss delete-instances --instance-ids (all at once; the scale set's capacity drops by as many)
#   gcp    instance-groups managed delete-instances --instances (lowers the target size), then wait-until --stable
# then reads the group again: a removed instance still in service fails the run.
# Out: the CLIs' output on stderr, then one line of JSON on stdout: {"removed": [...], "absent": [...]}
set -euo pipefail

die() { echo "remove-instance: $*" >&2; exit 1; }

: "${CLOUD:?CLOUD is required (aws, azure or gcp)}"
: "${FLEET_ID:?FLEET_ID is required (the fleet_id output of the module)}"
: "${NAME_PREFIX:?NAME_PREFIX is required (the name_prefix of the module)}"
PY="${OCTOPUS_PYTHON:-python3}"
timeout_s="${OCTOPUS_TF_REMOVE_TIMEOUT:-900}"
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || die "OCTOPUS_TF_REMOVE_TIMEOUT must be a whole number of seconds"
(($# > 0)) || { printf '{"removed":[],"absent":[]}\n'; exit 0; }

case "$CLOUD" in
  aws)
    [[ "$FLEET_ID" =~ ^arn:aws[a-z-]*:autoscaling:([a-z0-9-]+):[0-9]{12}:autoScalingGroup:[^:]+:autoScalingGroupName/(.+)$ ]] ||
      die "FLEET_ID '$FLEET_ID' is not an autoscaling group ARN"
    region="${BASH_REMATCH[1]}" group="${BASH_REMATCH[2]}"
    command -v aws >/dev/null || die "the AWS CLI (aws) is not on PATH of this Airflow worker"
    ;;
  azure)
    [[ "$FLEET_ID" =~ ^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/virtualMachineScaleSets/([^/]+)$ ]] ||
      die "FLEET_ID '$FLEET_ID' is not a virtual machine scale set id"
    subscription="${BASH_REMATCH[1]}" resource_group="${BASH_REMATCH[2]}" group="${BASH_REMATCH[3]}"
    command -v az >/dev/null || die "the Azure CLI (az) is not on PATH of this Airflow worker"
    ;;
  gcp)
    [[ "$FLEET_ID" =~ ^projects/([^/]+)/regions/([^/]+)/instanceGroupManagers/([^/]+)$ ]] ||
      die "FLEET_ID '$FLEET_ID' is not a regional managed instance group id"
    project="${BASH_REMATCH[1]}" region="${BASH_REMATCH[2]}" group="${BASH_REMATCH[3]}"
    command -v gcloud >/dev/null || die "the Google Cloud CLI (gcloud) is not on PATH of this Airflow worker"
    ;;
  local) die "the local cloud removes named instances itself: pass them to terraform-fleet.sh as TF_VAR_remove_instances" ;;
  *) die "unknown cloud '$CLOUD'" ;;
esac

# The group's members in service now, one "<worker name><TAB><handle the CLI removes it by>" line each.
members() {
  local listing
  case "$CLOUD" in
    aws) listing="$(aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names "$group" \
                      --region "$region" --output json)" ;;
    azure) listing="$(az vmss list-instances --resource-group "$resource_group" --name "$group" \
                        --subscription "$subscription" --output json)" ;;
    gcp) listing="$(gcloud compute instance-groups managed list-instances "$group" --region "$region" \
                      --project "$project" --format json)" ;;
  esac
  printf '%s' "$listing" | "$PY" -c '
import json, re, sys
cloud, prefix = sys.argv[1], sys.argv[2]
data = json.load(sys.stdin)
def worker(*parts):  # the name the module (and configure-tentacle.sh) gives the instance
    return re.sub(r"[^a-z0-9-]", "-", "-".join((prefix,) + parts).lower())
if cloud == "aws":
    groups = data.get("AutoScalingGroups") or []
    for i in (groups[0].get("Instances") or []) if groups else []:
        if not i.get("LifecycleState", "").startswith("Terminat"):  # Terminating*: already leaving
            print(worker(i["InstanceId"]) + "\t" + i["InstanceId"])
elif cloud == "azure":
    for vm in data:
        print(worker(str(vm["instanceId"]), (vm.get("vmId") or "")[:8]) + "\t" + str(vm["instanceId"]))
else:
    for m in data:
        if m.get("currentAction") not in ("DELETING", "ABANDONING"):
            name = m["instance"].rstrip("/").rsplit("/", 1)[-1]
            print(name + "\t" + name)
' "$CLOUD" "$NAME_PREFIX"
}

declare -A handle_of=()
while IFS=$'\t' read -r name handle; do
  [ -n "$name" ] && handle_of["$name"]="$handle"
done < <(members)

removed=() absent=() handles=()
for name in "$@"; do
  if [ -n "${handle_of[$name]+set}" ]; then
    removed+=("$name")
    handles+=("${handle_of[$name]}")
  else
    absent+=("$name")
  fi
done
[ "${#absent[@]}" = 0 ] ||
  echo "remove-instance: not in $CLOUD group $group now (already removed, or not of this fleet): ${absent[*]}" >&2

if [ "${#handles[@]}" -gt 0 ]; then
  echo "remove-instance: removing from $CLOUD group $group: ${removed[*]}" >&2
  case "$CLOUD" in
    aws)
      for id in "${handles[@]}"; do
        aws autoscaling set-instance-protection --instance-ids "$id" --auto-scaling-group-name "$group" \
          --no-protected-from-scale-in --region "$region" >&2
        aws autoscaling terminate-instance-in-auto-scaling-group --instance-id "$id" \
          --should-decrement-desired-capacity --region "$region" --output json >&2
      done
      ;;
    azure)
      az vmss delete-instances --resource-group "$resource_group" --name "$group" --instance-ids "${handles[@]}" \
        --subscription "$subscription" >&2
      ;;
    gcp)
      gcloud compute instance-groups managed delete-instances "$group" --instances "$(IFS=,; echo "${handles[*]}")" \
        --region "$region" --project "$project" --quiet >&2
      gcloud compute instance-groups managed wait-until "$group" --stable --timeout "$timeout_s" \
        --region "$region" --project "$project" >&2
      ;;
  esac

  # Verify: none of them is still in service.
  declare -A still=()
  while IFS=$'\t' read -r name _; do
    [ -n "$name" ] && still["$name"]=1
  done < <(members)
  left=()
  for name in "${removed[@]}"; do
    [ -z "${still[$name]+set}" ] || left+=("$name")
  done
  [ "${#left[@]}" = 0 ] || die "still in service in $CLOUD group $group after the removal: ${left[*]}"
fi

"$PY" -c 'import json, sys; n = sys.argv.index("--")
print(json.dumps({"removed": sys.argv[1:n], "absent": sys.argv[n + 1:]}, separators=(",", ":")))' \
  "${removed[@]}" -- "${absent[@]}"
