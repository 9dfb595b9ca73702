#!/usr/bin/env bash
# Bootstraps an Octopus Deploy polling Tentacle worker on Ubuntu (22.04/24.04).
#
# This file is a Terraform templatefile() template, rendered by include/terraform/{aws,azure,gcp}. Terraform
# placeholders are written with a single dollar and braces; a literal shell "$${" is escaped as "$$${" here.
# It never contains the API key: the key is read at boot from the cloud secret store through the instance
# identity, kept in one shell variable, passed only to `Tentacle register-worker`, then unset.
#
# Order: prerequisites (curl, gnupg, ca-certificates) -> install Tentacle (signing key fingerprint checked) -> read
# key (retried for a time budget: identity/IAM propagation on a first apply takes minutes) -> create instance +
# certificate -> polling config -> register-worker (first comms address) -> poll-server (every further HA node) ->
# start service -> health signal -> optional tooling (Docker with containers barred from the metadata service,
# PowerShell, worker-tools image). Registration comes first so the worker shows up in Octopus as early as possible.
# If the script fails before the worker is registered and running, the VM reports itself unhealthy so its cloud
# replaces it (AWS: autoscaling set-instance-health; Azure/GCP: the health endpoint their probes read stays down).
# Safe to run again (GCP runs startup scripts on every boot).
#
# Test hooks (unset in production): OCTOPUS_BOOTSTRAP_ROOT prefixes every path the script writes,
# OCTOPUS_BOOTSTRAP_RETRY_DELAY / OCTOPUS_BOOTSTRAP_ATTEMPTS tune the retry loop, OCTOPUS_BOOTSTRAP_SECRET_BUDGET
# (seconds) the secret read's time budget.
set -Eeuo pipefail
shopt -s inherit_errexit
set +x # never trace: a trace would print the API key
umask 077
export DEBIAN_FRONTEND=noninteractive

# ---- Rendered settings. base64 so that no value can break out of shell quoting. ----
b64() { printf '%s' "$1" | base64 -d; }
OCTOPUS_SERVER_URL="$(b64 '${base64encode(octopus_server_url)}')"
OCTOPUS_SPACE_NAME="$(b64 '${base64encode(octopus_space_name)}')"
WORKER_POOL_NAME="$(b64 '${base64encode(worker_pool_name)}')"
MACHINE_POLICY_NAME="$(b64 '${base64encode(machine_policy_name)}')"
NAME_PREFIX="$(b64 '${base64encode(name_prefix)}')"
# https://host:port values, comma-separated: the first is the registration's, every further one an HA node to poll.
SERVER_COMMS_ADDRESSES="$(b64 '${base64encode(join(",", server_comms_addresses))}')"
SECRET_STORE="$(b64 '${base64encode(secret_store)}')"
SECRET_REF="$(b64 '${base64encode(secret_ref)}')"
AZURE_CLIENT_ID="$(b64 '${base64encode(azure_client_id)}')"
TENTACLE_VERSION="$(b64 '${base64encode(tentacle_version)}')"
INSTALL_DOCKER="$(b64 '${base64encode(tostring(install_docker))}')"
INSTALL_POWERSHELL="$(b64 '${base64encode(tostring(install_powershell))}')"
WORKER_TOOLS_IMAGE="$(b64 '${base64encode(worker_tools_image)}')"
SECRET_READ_TIMEOUT_SECONDS="$(b64 '${base64encode(tostring(secret_read_timeout_seconds))}')"
HEALTH_CHECK_PORT="$(b64 '${base64encode(tostring(health_check_port))}')"
OCTOPUS_APT_KEY_FINGERPRINTS="$(b64 '${base64encode(join(" ", octopus_apt_key_fingerprints))}')"

# ---- Paths and logging ----
ROOT="$${OCTOPUS_BOOTSTRAP_ROOT:-}"
RETRY_DELAY="$${OCTOPUS_BOOTSTRAP_RETRY_DELAY:-5}"
ATTEMPTS="$${OCTOPUS_BOOTSTRAP_ATTEMPTS:-6}"
SECRET_BUDGET="$${OCTOPUS_BOOTSTRAP_SECRET_BUDGET:-$SECRET_READ_TIMEOUT_SECONDS}"
LOG_FILE="$ROOT/var/log/octopus-worker-bootstrap.log"
TENTACLE="$ROOT/opt/octopus/tentacle/Tentacle"
INSTANCE="Tentacle"
TENTACLE_CONFIG="$ROOT/etc/octopus/$INSTANCE/tentacle-$INSTANCE.config"
TENTACLE_APP_DIR="$ROOT/home/Octopus/Applications"
KEYRINGS="$ROOT/etc/apt/keyrings"
SOURCES="$ROOT/etc/apt/sources.list.d"
SYSTEMD_UNITS="$ROOT/etc/systemd/system"
HEALTH_SCRIPT="$ROOT/usr/local/lib/octopus-worker/health.py"
# Signing keys of the optional repositories (as Docker and Microsoft publish them).
DOCKER_KEY_FINGERPRINT="9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
MICROSOFT_KEY_FINGERPRINT="BC528686B50D79E339D3721CEB3E94ADBE1229CF"
REGISTERED=false
APT=(apt-get -o DPkg::Lock::Timeout=600 -y -q)

mkdir -p "$(dirname "$LOG_FILE")"
exec 3>&2                  # keep the console for one-line status messages
exec >>"$LOG_FILE" 2>&1    # everything else goes to the log only

log() { printf '%s configure-tentacle: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
say() { log "$*"; printf 'configure-tentacle: %s\n' "$*" >&3; }
die() { say "ERROR: $*"; exit 1; }
on_error() { say "FAILED with exit code $1 at line $2; see $LOG_FILE"; exit "$1"; }
trap 'on_error $? $LINENO' ERR
# Any exit before the worker is registered and running: tell the cloud to replace this VM (see report_unhealthy).
on_exit() {
  local status=$1
  trap - ERR
  if ((status != 0)) && [[ "$REGISTERED" != true ]] && declare -F report_unhealthy >/dev/null; then
    report_unhealthy || log "could not report this instance unhealthy"
  fi
}
trap 'on_exit $?' EXIT

# retry LABEL COMMAND... : runs COMMAND until it succeeds, with exponential backoff. Logs LABEL, never the
# arguments (one of them may be the API key). Commands run in a condition, so `set -e` does not apply inside.
retry() {
  local label=$1 attempt=1 delay=$RETRY_DELAY
  shift
  until "$@"; do
    if ((attempt >= ATTEMPTS)); then
      log "$label: failed after $attempt attempts"
      return 1
    fi
    log "$label: attempt $attempt of $ATTEMPTS failed; retrying in $${delay}s"
    sleep "$delay"
    attempt=$((attempt + 1))
    delay=$((delay * 2))
  done
}

# retry_for SECONDS LABEL COMMAND... : like retry, bounded by a time budget instead of a number of attempts
# (backoff doubles up to 30 s).
retry_for() {
  local budget=$1 label=$2 attempt=1 delay=$RETRY_DELAY started=$SECONDS
  shift 2
  until "$@"; do
    if ((SECONDS - started + delay > budget)); then
      log "$label: failed after $attempt attempts in $((SECONDS - started))s (budget $${budget}s)"
      return 1
    fi
    log "$label: attempt $attempt failed; retrying in $${delay}s (budget $${budget}s)"
    sleep "$delay"
    attempt=$((attempt + 1))
    delay=$((delay * 2 > 30 ? 30 : delay * 2))
  done
}

# json_get PATH : prints the dotted PATH of the JSON document on stdin (python3 ships with Ubuntu cloud images).
json_get() {
  python3 -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[key]
sys.stdout.write(str(value))
' "$1"
}

# curl_bearer TOKEN URL : GET with an Authorization header fed on stdin, so the token is on no command line.
curl_bearer() {
  printf 'Authorization: Bearer %s\n' "$1" | curl -fsS --max-time 30 -H @- "$2"
}

# ---- Validate the rendered settings ----
[[ "$OCTOPUS_SERVER_URL" =~ ^https?://[^[:space:]]+$ ]] || die "octopus_server_url must be an http(s) URL"
[[ -n "$OCTOPUS_SPACE_NAME" ]] || die "octopus_space_name is empty"
[[ -n "$WORKER_POOL_NAME" ]] || die "worker_pool_name is empty"
[[ -n "$MACHINE_POLICY_NAME" ]] || die "machine_policy_name is empty"
[[ "$NAME_PREFIX" =~ ^[a-z][a-z0-9-]*$ ]] || die "name_prefix must be lowercase letters, digits and hyphens"
IFS=, read -ra COMMS_ADDRESSES <<<"$SERVER_COMMS_ADDRESSES"
(($${#COMMS_ADDRESSES[@]} > 0)) || die "server_comms_addresses is empty"
for address in "$${COMMS_ADDRESSES[@]}"; do
  if [[ ! "$address" =~ ^https://[A-Za-z0-9.-]+:([0-9]{1,5})$ ]] || ((BASH_REMATCH[1] < 1 || BASH_REMATCH[1] > 65535)); then
    die "server_comms_addresses must be https://<host>:<port> values (got '$address')"
  fi
done
[[ "$SECRET_READ_TIMEOUT_SECONDS" =~ ^[0-9]+$ ]] || die "secret_read_timeout_seconds must be a whole number"
[[ "$SECRET_BUDGET" =~ ^[0-9]+$ ]] || die "OCTOPUS_BOOTSTRAP_SECRET_BUDGET must be a whole number of seconds"
[[ "$HEALTH_CHECK_PORT" =~ ^[0-9]{1,5}$ ]] || die "health_check_port must be a TCP port number"
[[ "$OCTOPUS_APT_KEY_FINGERPRINTS" =~ ^[0-9A-F]{40}( [0-9A-F]{40})*$ ]] ||
  die "octopus_apt_key_fingerprints must be 40-hex-digit uppercase fingerprints"
[[ -n "$SECRET_REF" ]] || die "secret_ref is empty"
case "$SECRET_STORE" in
  aws-secretsmanager | aws-ssm | azure-keyvault | gcp-secretmanager) ;;
  *) die "secret_store must be aws-secretsmanager, aws-ssm, azure-keyvault or gcp-secretmanager" ;;
esac
if [[ "$SECRET_STORE" == azure-keyvault && ! "$SECRET_REF" =~ ^https://[^/]+/secrets/[^/?]+$ ]]; then
  die "secret_ref for azure-keyvault must look like https://<vault>.vault.azure.net/secrets/<name>"
fi
CLOUD="$${SECRET_STORE%%-*}"

exec 9>"$LOG_FILE.lock"
flock -n 9 || die "another configure-tentacle run holds $LOG_FILE.lock"
START_SECONDS=$SECONDS
say "starting (cloud $CLOUD, space '$OCTOPUS_SPACE_NAME', pool '$WORKER_POOL_NAME'); log: $LOG_FILE"

# ---- Prerequisites: the tools every later step uses (minimal images may lack them) ----
retry "apt-get update" "$${APT[@]}" update
retry "install curl, gnupg and ca-certificates" "$${APT[@]}" install --no-install-recommends curl gnupg ca-certificates
# The AWS CLI reads the secret and, should the bootstrap fail, reports the instance unhealthy: install it first.
install_aws_cli() { snap wait system seed.loaded && snap install aws-cli --classic; }
if [[ "$CLOUD" == aws ]] && ! command -v aws >/dev/null; then
  retry "install the AWS CLI" install_aws_cli
fi

# ---- Instance identity: a worker name unique per VM and stable across reboots ----
aws_imds() {
  local token
  token="$(curl -fsS --max-time 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
    http://169.254.169.254/latest/api/token)" || return 1
  printf 'X-aws-ec2-metadata-token: %s\n' "$token" |
    curl -fsS --max-time 5 -H @- "http://169.254.169.254/latest/meta-data/$1"
}
azure_imds_compute() {
  curl -fsS --max-time 5 -H 'Metadata: true' \
    'http://169.254.169.254/metadata/instance/compute?api-version=2021-02-01'
}
gcp_metadata() {
  curl -fsS --max-time 5 -H 'Metadata-Flavor: Google' \
    "http://metadata.google.internal/computeMetadata/v1/$1"
}

case "$CLOUD" in
  aws)
    INSTANCE_ID="$(retry "read the EC2 instance id (IMDSv2)" aws_imds instance-id)"
    ;;
  azure)
    COMPUTE_JSON="$(retry "read the Azure instance metadata" azure_imds_compute)"
    VMSS_INSTANCE="$(json_get name <<<"$COMPUTE_JSON")" # <scale set>_<instance id>
    VM_ID="$(json_get vmId <<<"$COMPUTE_JSON")"
    # The VMSS instance id, plus part of the VM id because instance ids restart at 0 in a rebuilt scale set.
    INSTANCE_ID="$${VMSS_INSTANCE##*_}-$${VM_ID:0:8}"
    ;;
  gcp)
    # MIG instance names are <base_instance_name>-<random suffix>; base_instance_name is the name prefix.
    INSTANCE_ID="$(retry "read the GCE instance name" gcp_metadata instance/name)"
    INSTANCE_ID="$${INSTANCE_ID#"$NAME_PREFIX"-}"
    ;;
esac
[[ -n "$${INSTANCE_ID:-}" ]] || die "could not determine the instance id from the $CLOUD metadata service"
WORKER_NAME="$NAME_PREFIX-$${INSTANCE_ID,,}"
WORKER_NAME="$${WORKER_NAME//[^a-z0-9-]/-}"
say "worker name: $WORKER_NAME"

# ---- The health signal the cloud replaces unhealthy VMs by ----
# Azure (Application Health extension, probing 127.0.0.1) and GCP (MIG auto-healing health check, probing from
# Google's ranges) read http://<vm>:<health_check_port>/healthz: 200 while the Tentacle service runs, else 503.
# It is only started once the worker is registered, so a VM whose bootstrap failed never looks healthy.
health_bind() { if [[ "$CLOUD" == gcp ]]; then printf '0.0.0.0'; else printf '127.0.0.1'; fi; }
write_health_service() {
  install -d -m 0755 "$(dirname "$HEALTH_SCRIPT")" "$SYSTEMD_UNITS"
  cat >"$HEALTH_SCRIPT" <<'PY'
import http.server, json, subprocess, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        up = self.path == "/healthz" and subprocess.run(
            ["systemctl", "is-active", "--quiet", sys.argv[3]]).returncode == 0
        body = json.dumps({"ApplicationHealthState": "Healthy" if up else "Unhealthy"}).encode()
        self.send_response(200 if up else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Health).serve_forever()
PY
  chmod 0644 "$HEALTH_SCRIPT"
  cat >"$SYSTEMD_UNITS/octopus-worker-health.service" <<UNIT
[Unit]
Description=Octopus worker health endpoint for the cloud's instance repair
After=network-online.target

[Service]
ExecStart=/usr/bin/python3 /usr/local/lib/octopus-worker/health.py $(health_bind) $HEALTH_CHECK_PORT $INSTANCE
Restart=always
DynamicUser=yes

[Install]
WantedBy=multi-user.target
UNIT
  chmod 0644 "$SYSTEMD_UNITS/octopus-worker-health.service"
}
report_unhealthy() {
  case "$CLOUD" in
    aws)
      say "reporting instance $INSTANCE_ID unhealthy to its autoscaling group"
      command -v aws >/dev/null || return 1
      aws autoscaling set-instance-health --region "$(aws_imds placement/region)" --instance-id "$INSTANCE_ID" \
        --health-status Unhealthy --no-should-respect-grace-period
      ;;
    azure | gcp)
      say "health endpoint down: the $CLOUD instance repair replaces this VM"
      if [[ -f "$SYSTEMD_UNITS/octopus-worker-health.service" ]]; then # from an earlier, successful boot
        systemctl disable --now octopus-worker-health.service
      fi
      ;;
  esac
}

# ---- Tentacle from the Octopus apt repository (signed-by keyring, stable channel) ----
# install_signing_key NAME URL FINGERPRINT... : downloads a repository's armored key, refuses it unless every
# primary key in it has one of the expected fingerprints, and installs it as $KEYRINGS/NAME.gpg.
install_signing_key() {
  local name=$1 url=$2 tmp fprs fpr
  shift 2
  tmp="$(mktemp)"
  install -d -m 0755 "$KEYRINGS" "$SOURCES"
  retry "download the $name apt signing key" curl -fsSL --max-time 60 -o "$tmp" "$url"
  fprs="$(gpg --batch --with-colons --show-keys "$tmp" | awk -F: '$1 == "pub" {p = 1; next} p && $1 == "fpr" {print $10; p = 0}')"
  [[ -n "$fprs" ]] || die "the $name signing key from $url holds no public key"
  for fpr in $fprs; do
    [[ " $* " == *" $fpr "* ]] || die "the $name signing key from $url has fingerprint $fpr, expected one of: $*"
  done
  gpg --batch --yes --dearmor -o "$KEYRINGS/$name.gpg" "$tmp"
  chmod 0644 "$KEYRINGS/$name.gpg"
  rm -f "$tmp"
}
# shellcheck disable=SC2086 # the fingerprints are one word each
install_signing_key octopus https://apt.octopus.com/public.key $OCTOPUS_APT_KEY_FINGERPRINTS
ARCH="$(dpkg --print-architecture)"
printf 'deb [arch=%s signed-by=/etc/apt/keyrings/octopus.gpg] https://apt.octopus.com/ stable main\n' "$ARCH" \
  >"$SOURCES/octopus.list"
chmod 0644 "$SOURCES/octopus.list"
retry "apt-get update" "$${APT[@]}" update
TENTACLE_PACKAGE="tentacle"
if [[ -n "$TENTACLE_VERSION" ]]; then
  TENTACLE_PACKAGE="tentacle=$TENTACLE_VERSION"
fi
retry "install $TENTACLE_PACKAGE" "$${APT[@]}" install --no-install-recommends "$TENTACLE_PACKAGE"
[[ -x "$TENTACLE" ]] || die "the tentacle package did not install $TENTACLE"

# ---- The API key, read through the instance identity ----
aws_region() {
  if [[ "$SECRET_REF" == arn:* ]]; then
    cut -d: -f4 <<<"$SECRET_REF"
  else
    aws_imds placement/region
  fi
}
azure_token() {
  local url='http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01'
  url+="&resource=https%3A%2F%2F$(cut -d/ -f3 <<<"$SECRET_REF" | cut -d. -f2-)"
  if [[ -n "$AZURE_CLIENT_ID" ]]; then
    url+="&client_id=$AZURE_CLIENT_ID"
  fi
  curl -fsS --max-time 10 -H 'Metadata: true' "$url" | json_get access_token
}
gcp_token() {
  gcp_metadata instance/service-accounts/default/token | json_get access_token
}
fetch_api_key() {
  local token region
  case "$SECRET_STORE" in
    aws-secretsmanager)
      region="$(aws_region)" || return 1
      aws secretsmanager get-secret-value --region "$region" --secret-id "$SECRET_REF" \
        --query SecretString --output text
      ;;
    aws-ssm)
      region="$(aws_region)" || return 1
      aws ssm get-parameter --region "$region" --name "$SECRET_REF" --with-decryption \
        --query Parameter.Value --output text
      ;;
    azure-keyvault)
      token="$(azure_token)" || return 1
      curl_bearer "$token" "$SECRET_REF?api-version=7.4" | json_get value
      ;;
    gcp-secretmanager)
      token="$(gcp_token)" || return 1
      curl_bearer "$token" "https://secretmanager.googleapis.com/v1/$SECRET_REF:access" |
        json_get payload.data | base64 -d
      ;;
  esac
}
# Sets API_KEY only when a whole, plausible value was read (a failed attempt must not leave a partial value).
load_api_key() {
  local value
  value="$(fetch_api_key)" || return 1
  value="$${value%$'\r'}"
  if [[ -z "$value" ]]; then
    log "the secret $SECRET_REF is empty"
    return 1
  fi
  if [[ "$value" =~ [[:space:]] || "$value" == "{"* ]]; then
    die "the secret $SECRET_REF must hold the bare Octopus API key (no JSON, no whitespace)"
  fi
  if [[ "$value" != API-* ]]; then
    log "warning: the secret $SECRET_REF does not look like an Octopus API key (API-...)"
  fi
  API_KEY="$value"
}
API_KEY=""
retry_for "$SECRET_BUDGET" "read the API key from $SECRET_STORE" load_api_key

# ---- Tentacle instance, certificate, polling configuration, registration ----
if [[ ! -f "$TENTACLE_CONFIG" ]]; then
  "$TENTACLE" create-instance --instance "$INSTANCE" --config "$TENTACLE_CONFIG"
fi
"$TENTACLE" new-certificate --instance "$INSTANCE" --if-blank
"$TENTACLE" configure --instance "$INSTANCE" --app "$TENTACLE_APP_DIR" --noListen True
# The key is on register-worker's (and poll-server's) command line for the seconds they take (see README).
# Polling on Octopus Cloud's polling.<instance>.octopus.app:443 needs Tentacle >= 6.3.417.
retry "register the worker in space '$OCTOPUS_SPACE_NAME'" "$TENTACLE" register-worker \
  --instance "$INSTANCE" \
  --server "$OCTOPUS_SERVER_URL" \
  --apiKey "$API_KEY" \
  --name "$WORKER_NAME" \
  --comms-style TentacleActive \
  --server-comms-address "$${COMMS_ADDRESSES[0]}" \
  --server-comms-port "$${COMMS_ADDRESSES[0]##*:}" \
  --space "$OCTOPUS_SPACE_NAME" \
  --workerpool "$WORKER_POOL_NAME" \
  --policy "$MACHINE_POLICY_NAME" \
  --force
# Every further HA node: the same subscription polls it too. poll-server updates the trust entry of an address
# in place, so a re-run adds nothing.
for address in "$${COMMS_ADDRESSES[@]:1}"; do
  retry "poll the HA node $address" "$TENTACLE" poll-server \
    --instance "$INSTANCE" \
    --server "$OCTOPUS_SERVER_URL" \
    --apiKey "$API_KEY" \
    --server-comms-address "$address" \
    --server-comms-port "$${address##*:}"
done
unset API_KEY
"$TENTACLE" service --instance "$INSTANCE" --install --start
if [[ "$CLOUD" != aws ]]; then
  write_health_service
  systemctl daemon-reload
  systemctl enable --now octopus-worker-health.service
fi
REGISTERED=true
say "registered $WORKER_NAME (polling $${#COMMS_ADDRESSES[@]} node(s)) and started the Tentacle service after $((SECONDS - START_SECONDS))s"

# ---- Optional tooling, after registration ----
# shellcheck source=/dev/null
os_release() { (. "$ROOT/etc/os-release" && printf '%s' "$${!1}"); }
add_keyring_repo() { # NAME KEY_URL FINGERPRINT DEB_LINE_WITHOUT_OPTIONS
  install_signing_key "$1" "$2" "$3"
  printf 'deb [arch=%s signed-by=/etc/apt/keyrings/%s.gpg] %s\n' "$ARCH" "$1" "$4" >"$SOURCES/$1.list"
  chmod 0644 "$SOURCES/$1.list"
}
# On a shared worker any deployment's container could otherwise read the VM's identity (and through it the
# API key secret) from the metadata service. DOCKER-USER is the chain Docker leaves to the administrator and
# evaluates before its own forwarding rules; Docker recreates it empty on start, so a unit bound to docker.service
# inserts the rule every time. Processes on the host itself (the Tentacle) still reach the metadata service.
write_metadata_block_unit() {
  local rule='DOCKER-USER -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable'
  install -d -m 0755 "$SYSTEMD_UNITS"
  cat >"$SYSTEMD_UNITS/octopus-block-container-metadata.service" <<UNIT
[Unit]
Description=Keep Docker containers away from the cloud metadata service (169.254.169.254)
After=docker.service
Requires=docker.service
PartOf=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'iptables -C $rule 2>/dev/null || iptables -I $rule'

[Install]
WantedBy=docker.service
UNIT
  chmod 0644 "$SYSTEMD_UNITS/octopus-block-container-metadata.service"
}
if [[ "$INSTALL_DOCKER" == true ]]; then
  add_keyring_repo docker https://download.docker.com/linux/ubuntu/gpg "$DOCKER_KEY_FINGERPRINT" \
    "https://download.docker.com/linux/ubuntu $(os_release VERSION_CODENAME) stable"
  retry "apt-get update" "$${APT[@]}" update
  retry "install Docker" "$${APT[@]}" install docker-ce docker-ce-cli containerd.io
  systemctl enable --now docker
  write_metadata_block_unit
  systemctl daemon-reload
  systemctl enable --now octopus-block-container-metadata.service
  say "installed Docker; containers cannot reach 169.254.169.254"
fi
if [[ "$INSTALL_POWERSHELL" == true ]]; then
  add_keyring_repo microsoft https://packages.microsoft.com/keys/microsoft.asc "$MICROSOFT_KEY_FINGERPRINT" \
    "https://packages.microsoft.com/ubuntu/$(os_release VERSION_ID)/prod $(os_release VERSION_CODENAME) main"
  retry "apt-get update" "$${APT[@]}" update
  retry "install PowerShell" "$${APT[@]}" install powershell
  say "installed PowerShell"
fi
if [[ -n "$WORKER_TOOLS_IMAGE" ]]; then
  command -v docker >/dev/null || die "worker_tools_image is set but Docker is not installed (install_docker)"
  retry "pull $WORKER_TOOLS_IMAGE" docker pull "$WORKER_TOOLS_IMAGE"
  say "pulled $WORKER_TOOLS_IMAGE"
fi
say "done in $((SECONDS - START_SECONDS))s"
