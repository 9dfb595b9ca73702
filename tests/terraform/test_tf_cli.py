"""terraform fmt over every module, and terraform validate per cloud module where providers can be installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tf_support import CLOUD_MODULES, SCRIPT, TF_ROOT, terraform_env

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
# A filesystem mirror of providers (registry layout) lets validate run offline; this image has one.
PLUGIN_MIRROR = Path(os.environ.get("OCTOPUS_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))


def write_cli_config(path: Path) -> Path:
    """Providers found in the mirror come from it only; the rest from the registry (which fails offline)."""
    mirrored = sorted("/".join(p.relative_to(PLUGIN_MIRROR).parts) for p in PLUGIN_MIRROR.glob("*/*/*")
                      if p.is_dir()) if PLUGIN_MIRROR.is_dir() else []
    listed = ", ".join(f'"{m}"' for m in mirrored)
    mirror = f'  filesystem_mirror {{\n    path = "{PLUGIN_MIRROR}"\n    include = [{listed}]\n  }}\n'
    path.write_text("provider_installation {\n" + (mirror if mirrored else "")
                    + f"  direct {{\n    exclude = [{listed}]\n  }}\n}}\n")
    return path


def test_all_modules_are_terraform_fmt_clean():
    done = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-diff", "-no-color", str(TF_ROOT)],
                          env=terraform_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_module_validates_where_providers_are_available(module, tmp_path):
    # The same layout terraform-fleet.sh copies: include/terraform/<cloud> next to include/configure-tentacle.sh.
    shutil.copy(SCRIPT, tmp_path / SCRIPT.name)
    workdir = tmp_path / "terraform" / module
    shutil.copytree(TF_ROOT / module, workdir, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    env = terraform_env()
    env["TF_CLI_CONFIG_FILE"] = str(write_cli_config(tmp_path / "terraformrc"))
    init = subprocess.run(["terraform", "init", "-backend=false", "-input=false", "-no-color"], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=300)
    if init.returncode != 0:
        reason = next((line.strip() for line in init.stderr.splitlines() if line.strip().startswith("│ Error")),
                      init.stderr.strip()[:200])
        pytest.skip(f"terraform init cannot install the {module} providers here (offline?): {reason}")
    done = subprocess.run(["terraform", "validate", "-no-color"], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
