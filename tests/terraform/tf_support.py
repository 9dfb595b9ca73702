"""Helpers for the Terraform module and bootstrap-script tests: HCL parsing, offline rendering, shim sandbox."""

from __future__ import annotations

import ast
import functools
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import hcl2
from hcl2.utils import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
TF_ROOT = REPO / "include" / "terraform"
SCRIPT = REPO / "include" / "configure-tentacle.sh"
CONTRACT = TF_ROOT / "contract.json"
CLOUD_MODULES = ("aws", "azure", "gcp")
SHIM_SOURCE = Path(__file__).with_name("shim.py")
SHIMMED_TOOLS = ("curl", "apt-get", "gpg", "systemctl", "docker", "dpkg", "snap", "aws", "az", "gcloud", "Tentacle",
                 "iptables")
# Real tools the script may use; anything else is "command not found" in the sandbox.
REAL_TOOLS = ("awk", "base64", "cat", "chmod", "cut", "date", "dirname", "flock", "install", "mkdir", "mktemp", "rm",
              "sleep", "tr")
TEST_KEY = "API-SANDBOX0TEST0KEY0DO0NOT0LEAK"

_HCL_OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


def terraform_env() -> dict[str, str]:
    """Environment for offline terraform runs (no CLI config, no checkpoint calls)."""
    env = dict(os.environ)
    env.update({"TF_CLI_CONFIG_FILE": os.devnull, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"})
    env.pop("TF_DATA_DIR", None)
    return env


def existing_modules() -> list[str]:
    """Module names under include/terraform that exist now (the local module may be landing concurrently)."""
    return [m for m in ("local", *CLOUD_MODULES) if (TF_ROOT / m / "variables.tf").is_file()]


@functools.cache
def load_module(name: str) -> dict[str, list]:
    """Parse every .tf file of a module and merge the top-level block lists (cached: do not mutate)."""
    merged: dict[str, list] = {}
    for tf in sorted((TF_ROOT / name).glob("*.tf")):
        parsed = hcl2.loads(tf.read_text(), serialization_options=_HCL_OPTIONS)
        for key, blocks in parsed.items():
            merged.setdefault(key, []).extend(blocks)
    return merged


def declared_variables(module: dict) -> dict[str, dict]:
    return {name: body for block in module.get("variable", []) for name, body in block.items()}


def declared_outputs(module: dict) -> dict[str, dict]:
    return {name: body for block in module.get("output", []) for name, body in block.items()}


def resources(module: dict, kind: str = "resource") -> dict[tuple[str, str], dict]:
    """{(type, name): body} for `resource` (or `data`) blocks."""
    found = {}
    for block in module.get(kind, []):
        for rtype, named in block.items():
            for rname, body in named.items():
                found[(rtype, rname)] = body
    return found


def locals_of(module: dict) -> dict:
    return {k: v for block in module.get("locals", []) for k, v in block.items()}


def render_templates(variants: dict[str, dict], workdir: Path) -> dict[str, str]:
    """Render configure-tentacle.sh with templatefile() once per variant, offline, in one terraform run."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "variants.json").write_text(json.dumps(variants))
    (workdir / "main.tf").write_text(
        'output "scripts" {\n'
        f'  value = {{ for k, v in jsondecode(file("variants.json")) : k => templatefile("{SCRIPT}", v) }}\n'
        "}\n"
    )
    env = terraform_env()
    for args in (["init", "-input=false", "-no-color"], ["apply", "-auto-approve", "-input=false", "-no-color"]):
        done = subprocess.run(["terraform", *args], cwd=workdir, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"terraform {args[0]} failed:\n{done.stderr}")
    out = subprocess.run(["terraform", "output", "-json", "scripts"], cwd=workdir, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


BASE_VARS = {
    "octopus_server_url": "https://octopus.example.com",
    "octopus_space_name": "Platform Team",
    "worker_pool_name": "Shared Linux Pool",
    "machine_policy_name": "Default Machine Policy",
    "name_prefix": "octo-w",
    "server_comms_addresses": ["https://octopus.example.com:10943"],
    "secret_read_timeout_seconds": 600,
    "health_check_port": 8095,
    "octopus_apt_key_fingerprints": ["DF4235AA125D66D3938B0377896C79DABCE1F8D1"],
    "tentacle_version": "",
    "install_docker": True,
    "install_powershell": True,
    "worker_tools_image": "octopusdeploy/worker-tools:6.5.0-ubuntu.22.04",
    "azure_client_id": "",
}
STORES = {
    "aws-secretsmanager": {
        "secret_store": "aws-secretsmanager",
        "secret_ref": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:octopus/worker-api-key-AbCdEf",
    },
    "aws-ssm": {
        "secret_store": "aws-ssm",
        "secret_ref": "arn:aws:ssm:eu-west-1:123456789012:parameter/octopus/worker-api-key",
    },
    "azure-keyvault": {
        "secret_store": "azure-keyvault",
        "secret_ref": "https://octo-kv.vault.azure.net/secrets/worker-api-key",
        "azure_client_id": "00000000-1111-2222-3333-444444444444",
    },
    "gcp-secretmanager": {
        "secret_store": "gcp-secretmanager",
        "secret_ref": "projects/my-project/secrets/worker-api-key/versions/latest",
    },
}
HOSTILE_SPACE = "Team \"A\" $(touch pwned) `touch pwned2` 'quoted'"
VARIANTS = {
    **{name: {**BASE_VARS, **store} for name, store in STORES.items()},
    "no-tooling": {**BASE_VARS, **STORES["aws-secretsmanager"], "install_docker": False,
                   "install_powershell": False, "worker_tools_image": ""},
    "pinned": {**BASE_VARS, **STORES["aws-secretsmanager"], "tentacle_version": "8.3.2700"},
    "hostile": {**BASE_VARS, **STORES["aws-secretsmanager"], "octopus_space_name": HOSTILE_SPACE},
    "bad-url": {**BASE_VARS, **STORES["aws-secretsmanager"], "octopus_server_url": "octopus.example.com"},
    "cloud-443": {**BASE_VARS, **STORES["aws-secretsmanager"], "octopus_server_url": "https://acme.octopus.app",
                  "server_comms_addresses": ["https://polling.acme.octopus.app:443"]},
    "ha": {**BASE_VARS, **STORES["azure-keyvault"], "server_comms_addresses": [
        "https://node1.example.com:10943", "https://node2.example.com:10943", "https://node3.example.com:10943"]},
    "gcp-no-tooling": {**BASE_VARS, **STORES["gcp-secretmanager"], "install_docker": False, "install_powershell": False,
               "worker_tools_image": ""},
}


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    sandbox: Sandbox

    @property
    def calls(self) -> list[dict]:
        return self.sandbox.jsonl("calls.jsonl")

    @property
    def tentacle_calls(self) -> list[list[str]]:
        return [c["argv"] for c in self.sandbox.jsonl("tentacle.jsonl")]

    @property
    def log(self) -> str:
        path = self.sandbox.root / "var/log/octopus-worker-bootstrap.log"
        return path.read_text() if path.exists() else ""

    def tentacle_verbs(self) -> list[str]:
        return [argv[0] for argv in self.tentacle_calls]


class Sandbox:
    """A fake VM disk (root/) plus PATH shims; runs a rendered script with bash."""

    def __init__(self, base: Path, secret_value: str = TEST_KEY):
        self.base = base
        self.root = base / "root"
        self.state = base / "state"
        self.shims = base / "shims"
        self.realbin = base / "realbin"
        for d in (self.root / "etc", self.state, self.shims, self.realbin, base / "tmp", base / "home"):
            d.mkdir(parents=True, exist_ok=True)
        (self.root / "etc/os-release").write_text('ID=ubuntu\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n')
        (self.state / "secret-value").write_text(secret_value)
        shim = self.shims / "shim.py"
        shim.write_text(f"#!{sys.executable} -IS\n" + SHIM_SOURCE.read_text())
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
        for tool in SHIMMED_TOOLS:
            (self.shims / tool).symlink_to(shim)
        for tool in REAL_TOOLS:
            (self.realbin / tool).symlink_to(shutil.which(tool))
        (self.realbin / "python3").symlink_to(sys.executable)

    def jsonl(self, name: str) -> list[dict]:
        path = self.state / name
        return [ast.literal_eval(line) for line in path.read_text().splitlines()] if path.exists() else []

    def run(self, script: str, **env_extra: str) -> RunResult:
        path = self.base / "configure-tentacle.rendered.sh"
        path.write_text(script)
        env = {
            "PATH": f"{self.shims}:{self.realbin}",
            "HOME": str(self.base / "home"),
            "TMPDIR": str(self.base / "tmp"),
            "LANG": "C.UTF-8",
            "SHIM_STATE": str(self.state),
            "OCTOPUS_BOOTSTRAP_ROOT": str(self.root),
            "OCTOPUS_BOOTSTRAP_RETRY_DELAY": "0",
            "OCTOPUS_BOOTSTRAP_ATTEMPTS": "3",
            "OCTOPUS_BOOTSTRAP_SECRET_BUDGET": "1",
            **env_extra,
        }
        done = subprocess.run([shutil.which("bash"), str(path)], cwd=self.base, env=env, capture_output=True,
                              text=True, timeout=120)
        return RunResult(done.returncode, done.stdout, done.stderr, self)

    def files_containing(self, needle: str) -> list[Path]:
        """Every file under the sandbox that contains needle (the secret store's own file excluded)."""
        hits = []
        for p in self.base.rglob("*"):
            readable = p.is_file() and not p.is_symlink() and p != self.state / "secret-value"
            if readable and needle.encode() in p.read_bytes():
                hits.append(p)
        return hits
