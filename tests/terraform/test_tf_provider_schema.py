"""Offline proof beyond `terraform validate`: every argument, block and attribute reference the cloud modules write is
checked against each provider's schema (the .jsii manifests of @cdktf/provider-{aws,azurerm,google} from npm, and
for aws also the real 5.100 provider from the offline mirror), and the checker fails on planted mistakes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest
from provider_schema import PACKAGES, SCHEMA_DIR, Block, ProviderSchema, Report, check_module, check_providers
from tf_support import _HCL_OPTIONS, CLOUD_MODULES, TF_ROOT, load_module, terraform_env

PROVIDER_OF = {"aws": "aws", "azure": "azurerm", "gcp": "google"}
# The provider major each module's range admits and the manifests must match (include/terraform/*/versions.tf).
EXPECTED_MAJOR = {"aws": "6", "azurerm": "4", "google": "6"}
PLUGIN_MIRROR = Path("/opt/tf-plugins")


def ensure_installed() -> None:
    """The setup.d script installs the manifests; if they are missing, install them now (npm ci from the lock),
    and skip only when the npm registry cannot be reached."""
    if all((SCHEMA_DIR / "node_modules" / pkg / ".jsii").is_file() for pkg in PACKAGES.values()):
        return
    if shutil.which("npm") is None:
        pytest.fail("npm is not installed: run scripts/setup.d/30-terraform-checks.sh")
    done = subprocess.run(["npm", "ci", "--ignore-scripts", "--legacy-peer-deps", "--no-audit", "--no-fund"],
                          cwd=SCHEMA_DIR, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        ping = subprocess.run(["npm", "ping"], capture_output=True, text=True, timeout=120)
        if ping.returncode != 0:
            pytest.skip(f"the npm registry is unreachable, so the provider schemas cannot be installed: "
                        f"{ping.stderr.strip()[:200]}")
        pytest.fail(f"npm ci in {SCHEMA_DIR} failed:\n{done.stderr[-2000:]}")


@pytest.fixture(scope="session")
def schemas() -> dict[str, ProviderSchema]:
    ensure_installed()
    return {prov: ProviderSchema(prov, SCHEMA_DIR / "node_modules" / pkg / ".jsii") for prov, pkg in PACKAGES.items()}


def module_text(path: Path) -> str:
    return "\n".join(tf.read_text() for tf in sorted(path.glob("*.tf")))


def parse_dir(path: Path) -> dict[str, list]:
    merged: dict[str, list] = {}
    for tf in sorted(path.glob("*.tf")):
        for key, blocks in hcl2.loads(tf.read_text(), serialization_options=_HCL_OPTIONS).items():
            merged.setdefault(key, []).extend(blocks)
    return merged


def check_copy(tmp_path: Path, module: str, schemas, edit) -> Report:
    """Check a temporary copy of a module after ``edit(main_tf_text) -> text`` (the typo must really be planted)."""
    copy = tmp_path / module
    shutil.copytree(TF_ROOT / module, copy, ignore=shutil.ignore_patterns(".terraform*"))
    main = copy / "main.tf"
    before = main.read_text()
    after = edit(before)
    assert after != before, "the planted mistake did not change the module"
    main.write_text(after)
    return check_module(parse_dir(copy), module_text(copy), schemas, module)


def test_manifests_are_the_provider_majors_the_ranges_admit(schemas):
    for prov, schema in schemas.items():
        assert schema.provider_version.split(".")[0] == EXPECTED_MAJOR[prov], (prov, schema.provider_version)
        assert len(schema.resources) > 300 and len(schema.data_sources) > 100


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_every_argument_block_and_reference_is_in_the_provider_schema(schemas, module, record_property):
    report = check_module(load_module(module), module_text(TF_ROOT / module), schemas, module)
    schema = schemas[PROVIDER_OF[module]]
    counts = {"arguments": report.arguments_checked, "blocks": report.blocks_checked,
              "references": report.references_checked, "provider": f"{schema.provider}@{schema.provider_version}"}
    record_property("schema_check", json.dumps(counts))
    print(f"{module}: {counts}")
    assert [str(p) for p in report.problems] == []
    assert report.arguments_checked > 30 and report.blocks_checked > 5 and report.references_checked > 5


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_every_provider_block_setting_is_in_the_provider_schema(schemas, module):
    report = check_providers(load_module(module), schemas, module)
    assert [str(p) for p in report.problems] == []
    assert report.arguments_checked >= 2


# The guard rails of issue 19 (the package picks the instance that leaves; no rolling replacement), each an argument
# of the schema the module is checked against, so a provider that renamed or dropped one fails here.
GUARD_RAILS = {
    "aws": ("aws_autoscaling_group", ("protect_from_scale_in", "suspended_processes", "min_size", "max_size",
                                      "desired_capacity")),
    "azure": ("azurerm_linux_virtual_machine_scale_set", ("overprovision", "upgrade_mode", "instances")),
    "gcp": ("google_compute_region_instance_group_manager", ("target_size",)),
}


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_the_guard_rails_are_arguments_of_the_schema(schemas, module):
    tf_type, arguments = GUARD_RAILS[module]
    config = schemas[PROVIDER_OF[module]].resources[tf_type].config
    assert set(arguments) <= set(config.arguments) and not set(arguments) & config.deprecated
    if module == "gcp":
        policy = config.blocks["update_policy"][1]
        assert {"type", "instance_redistribution_type", "minimal_action"} <= set(policy.arguments)
    if module == "azure":
        # No per-instance protection in the provider (protectFromScaleIn is an instance-model setting only, and acts
        # on autoscale alone): the README says so, and it must still hold for the schema the module is checked with.
        assert not [a for a in config.arguments if "protect" in a]
        features = schemas["azurerm"].provider_config.blocks["features"][1].blocks["virtual_machine_scale_set"][1]
        assert {"roll_instances_when_required", "reimage_on_manual_upgrade"} <= set(features.arguments)


def test_a_typo_in_a_provider_feature_fails_the_check(schemas, tmp_path):
    copy = tmp_path / "azure"
    shutil.copytree(TF_ROOT / "azure", copy, ignore=shutil.ignore_patterns(".terraform*"))
    versions = copy / "versions.tf"
    versions.write_text(versions.read_text().replace("roll_instances_when_required", "roll_instance_when_required"))
    report = check_providers(parse_dir(copy), schemas, "azure")
    assert [str(p) for p in report.problems] == [
        "azure: provider.azurerm.features[0].virtual_machine_scale_set[0]: unknown argument or block "
        "'roll_instance_when_required'"]


def test_a_typo_in_an_argument_fails_the_check(schemas, tmp_path):
    report = check_copy(tmp_path, "aws", schemas,
                        lambda s: s.replace("health_check_grace_period", "health_check_grace_periodd", 1))
    assert [str(p) for p in report.problems] == [
        "aws: aws_autoscaling_group.workers: unknown argument or block 'health_check_grace_periodd'"]


def test_a_typo_in_a_nested_block_argument_fails_the_check(schemas, tmp_path):
    report = check_copy(tmp_path, "azure", schemas,
                        lambda s: s.replace("subnet_id = var.subnet_id", "subnet = var.subnet_id"))
    messages = [str(p) for p in report.problems]
    assert "azure: azurerm_linux_virtual_machine_scale_set.workers.network_interface[0].ip_configuration[0]: " \
           "unknown argument or block 'subnet'" in messages


def test_a_missing_required_argument_fails_the_check(schemas, tmp_path):
    report = check_copy(tmp_path, "aws", schemas,
                        lambda s: s.replace("  max_size                  = local.group_size\n", ""))
    messages = [str(p) for p in report.problems]
    assert "aws: aws_autoscaling_group.workers: missing required argument 'max_size'" in messages


def test_a_typo_in_an_attribute_reference_fails_the_check(schemas, tmp_path):
    report = check_copy(tmp_path, "gcp", schemas, lambda s: s.replace("id = i.instance_id", "id = i.instance_idd"))
    assert any("i.instance_idd" in str(p) and "has no attribute 'instance_idd'" in str(p) for p in report.problems)
    report = check_copy(tmp_path / "again", "azure", schemas,
                        lambda s: s.replace("i.virtual_machine_id", "i.vm_id"))
    assert any("has no attribute 'vm_id'" in str(p) for p in report.problems)


def test_a_deprecated_argument_fails_the_check(schemas, tmp_path):
    planted = ("  confidential_instance_config {\n    enable_confidential_compute = true\n  }\n\n"
               "  shielded_instance_config {")
    report = check_copy(tmp_path, "gcp", schemas, lambda s: s.replace("  shielded_instance_config {", planted, 1))
    assert "gcp: google_compute_instance_template.worker.confidential_instance_config[0]: " \
           "'enable_confidential_compute' is deprecated" in [str(p) for p in report.problems]


# ---------------------------------------------------------------- aws: the real provider from the offline mirror
def real_block(block: dict) -> Block:
    """A Block from `terraform providers schema -json` (its deprecated flags are the provider's own)."""
    out = Block()
    for name, attr in block.get("attributes", {}).items():
        if attr.get("required") or attr.get("optional"):
            out.arguments[name] = bool(attr.get("required"))
        if attr.get("deprecated"):
            out.deprecated.add(name)
    for name, nested in block.get("block_types", {}).items():
        out.blocks[name] = (nested.get("min_items", 0) > 0, real_block(nested["block"]))
        if nested["block"].get("deprecated"):
            out.deprecated.add(name)
    return out


def test_aws_module_against_the_real_provider_schema_with_its_deprecations(tmp_path, record_property):
    if not (PLUGIN_MIRROR / "registry.terraform.io/hashicorp/aws").is_dir() or shutil.which("terraform") is None:
        pytest.skip(f"the aws provider is not in the offline mirror {PLUGIN_MIRROR}")
    work = tmp_path / "aws"
    work.mkdir()
    (work / "versions.tf").write_text((TF_ROOT / "aws" / "versions.tf").read_text().split("provider \"aws\"")[0])
    rc = tmp_path / "terraformrc"
    rc.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{PLUGIN_MIRROR}"\n  }}\n}}\n')
    env = {**terraform_env(), "TF_CLI_CONFIG_FILE": str(rc)}
    subprocess.run(["terraform", "init", "-backend=false", "-input=false", "-no-color"], cwd=work, env=env,
                   check=True, capture_output=True, timeout=300)
    done = subprocess.run(["terraform", "providers", "schema", "-json"], cwd=work, env=env, check=True,
                          capture_output=True, text=True, timeout=300)
    (provider,) = json.loads(done.stdout)["provider_schemas"].values()

    class RealSchema:
        resources = {}
        data_sources = {}

    real = RealSchema()
    for kinds, key in ((real.resources, "resource_schemas"), (real.data_sources, "data_source_schemas")):
        for tf_type, spec in provider[key].items():
            kinds[tf_type] = type("Kind", (), {"config": real_block(spec["block"]),
                                               "attributes": dict.fromkeys(spec["block"].get("attributes", {}))})()
    report = check_module(load_module("aws"), "", {"aws": real}, "aws")
    record_property("schema_check_real_aws", json.dumps({"arguments": report.arguments_checked,
                                                         "blocks": report.blocks_checked}))
    assert [str(p) for p in report.problems] == []
    assert report.arguments_checked > 30


def test_the_outdated_inventory_reads_only_attributes_the_providers_have(schemas, tmp_path):
    """Issue 19: Azure tells an outdated VM by latest_model_applied, GCP by its instance's labels (checked offline)."""
    report = check_copy(tmp_path, "azure", schemas, lambda s: s.replace("i.latest_model_applied", "i.latest_model"))
    assert any("has no attribute 'latest_model'" in str(p) for p in report.problems)
    report = check_copy(tmp_path / "gcp", "gcp", schemas, lambda s: s.replace("lookup(i.labels,", "lookup(i.label,"))
    assert any("has no attribute 'label'" in str(p) for p in report.problems)
