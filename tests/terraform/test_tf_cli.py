"""terraform fmt over every module; per cloud module, where providers can be installed: validate, and (aws) an
offline `terraform test` plan against a mocked provider."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tf_support import CLOUD_MODULES, SCRIPT, TF_ROOT, terraform_env

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
# A filesystem mirror of providers (registry layout) lets init run offline; this image has one (aws only).
PLUGIN_MIRROR = Path(os.environ.get("OCTOPUS_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))
MOCK_PLAN_TESTS = {"aws": Path(__file__).with_name("aws_plan.tftest.hcl")}


def write_cli_config(path: Path) -> Path:
    """Providers come from the mirror only: init never contacts a registry (the network here is loopback only),
    and a provider the mirror lacks fails init at once, which skips that module's CLI tests."""
    mirror = f'  filesystem_mirror {{\n    path = "{PLUGIN_MIRROR}"\n  }}\n' if PLUGIN_MIRROR.is_dir() else ""
    path.write_text("provider_installation {\n" + mirror + "}\n")
    return path


@pytest.fixture(scope="module")
def initialized(tmp_path_factory):
    """initialized(cloud) -> (workdir, env) of an initialized copy of the module, or skip with init's reason."""
    cache: dict[str, tuple[Path, dict[str, str]] | str] = {}

    def get(module: str) -> tuple[Path, dict[str, str]]:
        if module not in cache:
            base = tmp_path_factory.mktemp(module)
            # The layout terraform-fleet.sh copies: include/terraform/<cloud> next to include/configure-tentacle.sh.
            shutil.copy(SCRIPT, base / SCRIPT.name)
            workdir = base / "terraform" / module
            shutil.copytree(TF_ROOT / module, workdir, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
            env = {**terraform_env(), "TF_CLI_CONFIG_FILE": str(write_cli_config(base / "terraformrc"))}
            init = subprocess.run(["terraform", "init", "-backend=false", "-input=false", "-no-color"],
                                  cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
            if init.returncode == 0:
                cache[module] = (workdir, env)
            else:
                lines = [line.strip() for line in init.stderr.splitlines() if line.strip()]
                cache[module] = " ".join(lines[:4])[:300]
        if isinstance(cache[module], str):
            pytest.skip(f"the provider mirror {PLUGIN_MIRROR} lacks the {module} providers: {cache[module]}")
        return cache[module]

    return get


def test_all_modules_are_terraform_fmt_clean():
    done = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-diff", "-no-color", str(TF_ROOT)],
                          env=terraform_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mock_plan_tests_are_terraform_fmt_clean():
    done = subprocess.run(["terraform", "fmt", "-check", "-diff", "-no-color", *map(str, MOCK_PLAN_TESTS.values())],
                          env=terraform_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_module_validates_where_providers_are_available(module, initialized):
    workdir, env = initialized(module)
    done = subprocess.run(["terraform", "validate", "-no-color"], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("module", sorted(MOCK_PLAN_TESTS))
def test_module_plans_against_a_mocked_provider(module, initialized):
    workdir, env = initialized(module)
    (workdir / "tests").mkdir(exist_ok=True)
    shutil.copy(MOCK_PLAN_TESTS[module], workdir / "tests" / MOCK_PLAN_TESTS[module].name)
    done = subprocess.run(["terraform", "test", "-no-color"], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
