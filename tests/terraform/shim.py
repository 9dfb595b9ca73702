"""PATH shim standing in for the tools configure-tentacle.sh calls (curl, apt-get, gpg, aws, Tentacle, ...).

Installed as symlinks named after each tool; dispatches on the name it was called by. State lives in
$SHIM_STATE (outside the simulated VM disk), one Python literal a line: every call except Tentacle's is appended to
calls.jsonl; Tentacle appends its full argv to tentacle.jsonl (the one file allowed to hold the API key) and only
the verb to calls.jsonl, which keeps the global order. The secret stores serve the file
$SHIM_STATE/secret-value, never an environment variable, so the script's environment never holds the key.

Fault injection: SHIM_FAIL="tool" or "tool=substring-of-argv"; SHIM_FAIL_TIMES=N fails only the first N matches.
Signing keys: each downloaded key names the fingerprint its publisher uses (KEY_FINGERPRINTS), which
`gpg --show-keys --with-colons` reports; SHIM_KEY_FINGERPRINT replaces it (a tampered or rotated key).
"""

from __future__ import annotations

import binascii
import os
import sys

# os.path, binascii and repr() records rather than pathlib, base64 and json (imported lazily, for replies only):
# the shim starts ~25 times per script run, so its start-up time is most of the test suite's time.

STATE = os.environ["SHIM_STATE"]
ROOT = os.environ["OCTOPUS_BOOTSTRAP_ROOT"]
IMDS_TOKEN = "imds-session-token"
AZURE_TOKEN = "azure-access-token"
GCP_TOKEN = "gcp-access-token"
AWS_INSTANCE_ID = "i-0abc123def4567890"
AZURE_COMPUTE = {"name": "octo-w_3", "vmId": "1a2b3c4d-5e6f-7a8b-9c0d-112233445566"}
GCP_INSTANCE_NAME = "octo-w-x7k2"
KEY_FINGERPRINTS = {
    "apt.octopus.com": "DF4235AA125D66D3938B0377896C79DABCE1F8D1",
    "download.docker.com": "9DC858229FC7DD38854AE2D88D81803C0EBFCD88",
    "packages.microsoft.com": "BC528686B50D79E339D3721CEB3E94ADBE1229CF",
}


def record(path: str, entry: dict) -> None:
    with open(os.path.join(STATE, path), "a", encoding="utf-8") as fh:
        fh.write(repr(entry) + "\n")


def should_fail(tool: str, argv: list[str]) -> bool:
    spec = os.environ.get("SHIM_FAIL", "")
    if not spec:
        return False
    name, _, needle = spec.partition("=")
    if name != tool or (needle and not any(needle in a for a in argv)):
        return False
    limit = os.environ.get("SHIM_FAIL_TIMES")
    if limit is None:
        return True
    counter = os.path.join(STATE, "fail-count")
    count = int(read(counter)) if os.path.exists(counter) else 0
    write(counter, str(count + 1))
    return count < int(limit)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def api_key() -> str:
    return read(os.path.join(STATE, "secret-value"))


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def curl(argv: list[str]) -> int:
    import json
    url = next(a for a in argv if a.startswith("http"))
    headers = [argv[i + 1] for i, a in enumerate(argv) if a == "-H"]
    if "@-" in headers:
        headers.remove("@-")
        headers += [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
    out = option(argv, "-o")

    def reply(body: str) -> int:
        if out:
            write(out, body)
        else:
            sys.stdout.write(body)
        return 0

    def denied() -> int:
        sys.stderr.write(f"curl: (22) The requested URL returned error: 401 ({url})\n")
        return 22

    if url == "http://169.254.169.254/latest/api/token":
        return reply(IMDS_TOKEN) if "-X" in argv and option(argv, "-X") == "PUT" else denied()
    if url.startswith("http://169.254.169.254/latest/meta-data/"):
        if f"X-aws-ec2-metadata-token: {IMDS_TOKEN}" not in headers:
            return denied()
        leaf = url.rsplit("/latest/meta-data/", 1)[1]
        return reply({"instance-id": AWS_INSTANCE_ID, "placement/region": "eu-west-1"}[leaf])
    if url.startswith("http://169.254.169.254/metadata/instance/compute"):
        return reply(json.dumps(AZURE_COMPUTE))
    if url.startswith("http://169.254.169.254/metadata/identity/oauth2/token"):
        if "resource=https%3A%2F%2Fvault.azure.net" not in url or "client_id=" not in url:
            return denied()
        return reply(json.dumps({"access_token": AZURE_TOKEN}))
    if ".vault.azure.net/secrets/" in url:
        if f"Authorization: Bearer {AZURE_TOKEN}" not in headers:
            return denied()
        return reply(json.dumps({"value": api_key(), "id": url}))
    if url == "http://metadata.google.internal/computeMetadata/v1/instance/name":
        return reply(GCP_INSTANCE_NAME)
    if url.endswith("/instance/service-accounts/default/token"):
        return reply(json.dumps({"access_token": GCP_TOKEN, "expires_in": 3599}))
    if url.startswith("https://secretmanager.googleapis.com/v1/"):
        if f"Authorization: Bearer {GCP_TOKEN}" not in headers:
            return denied()
        data = binascii.b2a_base64(api_key().encode(), newline=False).decode()
        return reply(json.dumps({"name": url, "payload": {"data": data}}))
    if url.endswith((".key", "/gpg", ".asc")):
        host = url.split("/")[2]
        fpr = os.environ.get("SHIM_KEY_FINGERPRINT") or KEY_FINGERPRINTS[host]
        return reply(f"-----BEGIN PGP PUBLIC KEY BLOCK-----\nfake {fpr}\n-----END PGP PUBLIC KEY BLOCK-----\n")
    sys.stderr.write(f"curl shim: no route for {url}\n")
    return 7


def aws(argv: list[str]) -> int:
    if argv[:2] == ["secretsmanager", "get-secret-value"] or argv[:2] == ["ssm", "get-parameter"]:
        if not option(argv, "--region"):
            sys.stderr.write("You must specify a region.\n")
            return 253
        sys.stdout.write(api_key() + "\n")
        return 0
    return 0


def apt_get(argv: list[str]) -> int:
    if "install" in argv and any(a == "tentacle" or a.startswith("tentacle=") for a in argv):
        tentacle = os.path.join(ROOT, "opt/octopus/tentacle/Tentacle")
        os.makedirs(os.path.dirname(tentacle), exist_ok=True)
        if not os.path.lexists(tentacle):
            os.symlink(os.path.join(os.path.dirname(__file__), "Tentacle"), tentacle)
    return 0


def tentacle(argv: list[str]) -> int:
    if argv and argv[0] == "create-instance":
        config = option(argv, "--config")
        os.makedirs(os.path.dirname(config), exist_ok=True)
        write(config, "<octopus-settings/>")
    return 0


def main() -> int:
    tool = os.path.basename(sys.argv[0])
    argv = sys.argv[1:]
    if tool == "Tentacle":
        record("calls.jsonl", {"cmd": tool, "argv": argv[:1]})
        record("tentacle.jsonl", {"argv": argv})
    else:
        record("calls.jsonl", {"cmd": tool, "argv": argv})
    if should_fail(tool, argv):
        sys.stderr.write(f"{tool}: injected failure\n")
        return 1
    if tool == "curl":
        return curl(argv)
    if tool == "aws":
        return aws(argv)
    if tool == "apt-get":
        return apt_get(argv)
    if tool == "Tentacle":
        return tentacle(argv)
    if tool == "gpg" and "--show-keys" in argv:
        fpr = read(argv[-1]).split("fake ", 1)[1].split()[0]
        sys.stdout.write(f"pub:-:4096:1:{fpr[-16:]}:1500000000:::-:::scESC::::::23::0:\nfpr:::::::::{fpr}:\n")
        return 0
    if tool == "gpg":
        write(option(argv, "-o"), "dearmored keyring\n")
        return 0
    if tool == "dpkg" and argv == ["--print-architecture"]:
        print("amd64")
        return 0
    return 0  # systemctl, docker, snap, az, gcloud: record only


if __name__ == "__main__":
    sys.exit(main())
