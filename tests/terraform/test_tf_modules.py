"""Static checks of the fleet modules (parsed with python-hcl2) against the shared contract and hardening rules."""

from __future__ import annotations

import json
import re

import pytest
from tf_support import (
    BASE_VARS,
    CLOUD_MODULES,
    CONTRACT,
    SCRIPT,
    STORES,
    TF_ROOT,
    declared_outputs,
    declared_variables,
    existing_modules,
    load_module,
    locals_of,
    resources,
)

CONTRACT_DATA = json.loads(CONTRACT.read_text())
MODULES = existing_modules()
DEPRECATED_RESOURCES = {
    "aws_launch_configuration",  # no new accounts since 2024-10-01
    "aws_instance",  # a fleet is an autoscaling group
    "azurerm_virtual_machine_scale_set",  # legacy, superseded by azurerm_linux_virtual_machine_scale_set
    "azurerm_virtual_machine",
    "google_compute_instance",  # no healing, reused names: use a MIG
    "template_file",
}
# Variable names that would hold a secret value (a reference such as an ARN, id or name is fine).
SECRET_VALUE_NAME = re.compile(r"(password|passwd|token|api_key|apikey|secret)$", re.IGNORECASE)


def unwrap(value) -> str:
    """'${expr}' -> 'expr' (python-hcl2 wraps expressions); plain values as str."""
    text = str(value)
    return text[2:-1] if text.startswith("${") and text.endswith("}") else text


def template_placeholders() -> set[str]:
    """Names referenced by Terraform interpolations in configure-tentacle.sh (function names excluded)."""
    names = set()
    for expr in re.findall(r"(?<!\$)\$\{([^}]*)\}", SCRIPT.read_text()):
        names |= set(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()", expr))
    assert not re.search(r"(?<!%)%\{", SCRIPT.read_text()), "template directives are not expected"
    return names


def operator_supplied_in_readme(module: str) -> set[str]:
    """Backticked names in the first column of the table under '## Operator-supplied inputs' in the README."""
    readme = (TF_ROOT / module / "README.md").read_text()
    match = re.search(r"^## Operator-supplied inputs\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    if not match:
        return set()
    return set(re.findall(r"^\|\s*`([a-z0-9_]+)`", match.group(1), re.MULTILINE))


def referenced_vars(expr) -> set[str]:
    return set(re.findall(r"\bvar\.([a-z0-9_]+)", json.dumps(expr)))


def user_data_expressions(module_name: str) -> list[str]:
    """The expressions that become instance user data / custom data / startup script in a cloud module."""
    module = load_module(module_name)
    res = resources(module)
    if module_name == "aws":
        found = [res[("aws_launch_template", "worker")]["user_data"]]
    elif module_name == "azure":
        found = [res[("azurerm_linux_virtual_machine_scale_set", "workers")]["custom_data"]]
    else:
        found = [json.dumps(res[("google_compute_instance_template", "worker")]["metadata"])]
    # A local the module names the rendered script by (it is also part of the build fingerprint) is followed.
    named = locals_of(module)
    return [re.sub(r"\$\{local\.(user_data|startup_script)\}", lambda m: named[m.group(1)], e) for e in found]


def test_contract_file_holds_the_design_variables_and_the_named_removal():
    assert sorted(CONTRACT_DATA["variables"]) == sorted([
        "octopus_server_url", "octopus_space_name", "worker_pool_name", "instance_count", "machine_policy_name",
        "name_prefix", "remove_instances"])
    optional = {k: v["default"] for k, v in CONTRACT_DATA["variables"].items() if not v["required"]}
    assert optional == {"machine_policy_name": "Default Machine Policy", "remove_instances": []}


def test_every_cloud_module_exists():
    assert set(CLOUD_MODULES) <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_declares_every_contract_variable_with_its_type_and_default(module):
    declared = declared_variables(load_module(module))
    for name, spec in CONTRACT_DATA["variables"].items():
        assert name in declared, f"{module} does not declare {name}"
        assert unwrap(declared[name]["type"]) == spec["type"], f"{module}.{name} type"
        if spec["required"]:
            assert "default" not in declared[name], f"{module}.{name} must be required"
        else:
            assert declared[name].get("default") == spec["default"], f"{module}.{name} default"


@pytest.mark.parametrize("module", MODULES)
def test_other_inputs_have_defaults_or_are_documented_operator_inputs(module):
    declared = declared_variables(load_module(module))
    required_extra = {n for n, body in declared.items()
                      if "default" not in body and n not in CONTRACT_DATA["variables"]}
    assert required_extra == operator_supplied_in_readme(module)


@pytest.mark.parametrize("module", MODULES)
def test_module_has_contract_outputs_and_none_is_sensitive(module):
    outputs = declared_outputs(load_module(module))
    assert set(CONTRACT_DATA["outputs"]) <= set(outputs)
    assert [n for n, body in outputs.items() if body.get("sensitive")] == []


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_worker_names_are_the_names_of_the_inventoried_instances(module):
    outputs = declared_outputs(load_module(module))
    assert unwrap(outputs["worker_names"]["value"]) == "[for i in local.instances : i.name]"
    assert unwrap(outputs["instances"]["value"]) == "local.instances"


INVENTORY = {
    "aws": ("aws_instances", "workers"),
    "azure": ("azurerm_virtual_machine_scale_set", "workers"),
    "gcp": ("google_compute_instance", "workers"),
}


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_instances_are_read_from_the_cloud_after_apply(module):
    mod = load_module(module)
    data = resources(mod, "data")
    assert INVENTORY[module] in data
    instances = unwrap(locals_of(mod)["instances"])
    assert f"data.{INVENTORY[module][0]}.{INVENTORY[module][1]}" in instances
    assert "name" in instances and "id" in instances


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_module_declares_every_shared_bootstrap_input_with_its_type_and_default(module):
    declared = declared_variables(load_module(module))
    for name, spec in CONTRACT_DATA["shared_inputs"].items():
        assert name in declared, f"{module} does not declare {name}"
        assert unwrap(declared[name]["type"]) == spec["type"], f"{module}.{name} type"
        assert declared[name].get("default") == spec["default"], f"{module}.{name} default"


@pytest.mark.parametrize("module", MODULES)
def test_no_resource_of_a_deprecated_kind(module):
    mod = load_module(module)
    # Managed resources only: the data sources of the same names (a scale set's, an instance's) only read.
    assert {t for t, _ in resources(mod)} & DEPRECATED_RESOURCES == set()
    assert "template_file" not in {t for t, _ in resources(mod, "data")}
    providers = {p for block in mod.get("terraform", []) for req in block.get("required_providers", [])
                 for p in req}
    assert "template" not in providers


# The provider majors each module must admit: the one the offline tests check, and today's (issue 13).
PROVIDER_RANGES = {"aws": ("aws", ">= 5.100, < 7.0"), "azure": ("azurerm", ">= 4.55, < 6.0"),
                   "gcp": ("google", ">= 6.50, < 8.0")}


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_providers_admit_the_tested_and_the_current_major_below_the_next(module):
    (terraform,) = load_module(module)["terraform"]
    assert terraform["required_version"] == ">= 1.5"
    (required,) = terraform["required_providers"]
    name, version = PROVIDER_RANGES[module]
    assert required[name]["version"] == version


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_bootstrap_values_are_exactly_the_template_placeholders(module):
    assert set(locals_of(load_module(module))["bootstrap_vars"]) == template_placeholders()


def test_rendered_test_variants_use_exactly_the_template_placeholders():
    for store in STORES.values():
        assert set({**BASE_VARS, **store}) == template_placeholders()


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_user_data_is_the_bootstrap_template_with_bootstrap_values(module):
    (expr,) = user_data_expressions(module)
    assert "templatefile(local.bootstrap_template, local.bootstrap_vars)" in expr


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_no_secret_valued_variable_flows_into_user_data(module):
    mod = load_module(module)
    declared = declared_variables(mod)
    flowing = referenced_vars(locals_of(mod)["bootstrap_vars"]) | referenced_vars(user_data_expressions(module))
    assert flowing, "expected the bootstrap values to reference variables"
    assert [n for n in flowing if declared[n].get("sensitive")] == []
    assert [n for n in flowing if SECRET_VALUE_NAME.search(n)] == []


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_no_variable_holds_a_secret_value(module):
    declared = declared_variables(load_module(module))
    assert [n for n in declared if SECRET_VALUE_NAME.search(n)] == []


def test_aws_launch_template_requires_imdsv2_with_hop_limit_one():
    lt = resources(load_module("aws"))[("aws_launch_template", "worker")]
    (meta,) = lt["metadata_options"]
    assert (meta["http_tokens"], meta["http_put_response_hop_limit"]) == ("required", 1)


def test_aws_instances_get_no_public_ip_unless_asked():
    lt = resources(load_module("aws"))[("aws_launch_template", "worker")]
    (nic,) = lt["network_interfaces"]
    assert unwrap(nic["associate_public_ip_address"]) == "var.associate_public_ip_address"
    assert declared_variables(load_module("aws"))["associate_public_ip_address"]["default"] is False
    assert "vpc_security_group_ids" not in lt  # security groups go on the interface (EC2 refuses both)


def test_aws_user_data_is_gzipped():
    (expr,) = user_data_expressions("aws")
    assert unwrap(expr).startswith("base64gzip(templatefile(")


def test_aws_instances_may_report_only_their_own_group_unhealthy():
    doc = resources(load_module("aws"), "data")[("aws_iam_policy_document", "report_health")]
    (statement,) = doc["statement"]
    assert statement["actions"] == ["autoscaling:SetInstanceHealth"]
    assert [unwrap(r) for r in statement["resources"]] == ["aws_autoscaling_group.workers.arn"]


def test_azure_encrypts_at_host_by_default_and_repairs_unhealthy_vms():
    mod = load_module("azure")
    assert declared_variables(mod)["encryption_at_host_enabled"]["default"] is True
    vmss = resources(mod)[("azurerm_linux_virtual_machine_scale_set", "workers")]
    assert unwrap(vmss["encryption_at_host_enabled"]) == "var.encryption_at_host_enabled"
    (repair,) = vmss["automatic_instance_repair"]
    assert repair["enabled"] is True
    (ext,) = vmss["extension"]
    assert (ext["publisher"], ext["type"]) == ("Microsoft.ManagedServices", "ApplicationHealthLinux")


def test_gcp_auto_healing_probes_the_registration_health_endpoint():
    res = resources(load_module("gcp"))
    (check,) = res[("google_compute_health_check", "worker")]["http_health_check"]
    assert (unwrap(check["port"]), check["request_path"]) == ("var.health_check_port", "/healthz")
    assert "tcp_health_check" not in res[("google_compute_health_check", "worker")]


def test_aws_root_volume_is_encrypted():
    lt = resources(load_module("aws"))[("aws_launch_template", "worker")]
    (bdm,) = lt["block_device_mappings"]
    (ebs,) = bdm["ebs"]
    assert ebs["encrypted"] is True


# ---- issue 19: the package picks the instance that leaves, never the cloud; no rolling replacement ----
GROUPS = {
    "aws": (("aws_autoscaling_group", "workers"), "desired_capacity"),
    "azure": (("azurerm_linux_virtual_machine_scale_set", "workers"), "instances"),
    "gcp": (("google_compute_region_instance_group_manager", "workers"), "target_size"),
}


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_the_size_is_instance_count_and_terraform_keeps_writing_it(module):
    """Who owns the count (README "Who removes an instance"): the instance_count param, through Terraform. The runner
    removes named instances with a size decrement before the plan, so no ignore_changes is needed to keep them
    removed, and none may hide a size the package asked for."""
    key, size = GROUPS[module]
    mod = load_module(module)
    group = resources(mod)[key]
    expr = unwrap(group[size])
    if expr == "local.group_size":
        expr = unwrap(locals_of(mod)["group_size"])
    # instance_count current instances, plus the outdated ones still draining (a rebuild without a gap)
    assert expr == "var.instance_count + var.surge_instances"
    ignored = [unwrap(i) for block in group.get("lifecycle", []) for i in block.get("ignore_changes", [])]
    assert size not in json.dumps(ignored)


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_every_cloud_module_reports_a_named_instance_that_is_still_running(module):
    (check,) = [c["named_instances_are_removed"] for c in load_module(module).get("check", [])]
    (assertion,) = check["assert"]
    assert "var.remove_instances" in assertion["condition"] and "local.instances" in assertion["condition"]


def test_aws_group_never_picks_an_instance_and_never_rolls():
    asg = resources(load_module("aws"))[("aws_autoscaling_group", "workers")]
    assert {k: unwrap(asg[k]) for k in ("min_size", "max_size", "desired_capacity")} == {
        "min_size": "0", "max_size": "local.group_size", "desired_capacity": "local.group_size"}
    assert asg["protect_from_scale_in"] is True
    # AZRebalance and InstanceRefresh suspended; ReplaceUnhealthy, HealthCheck, Launch, Terminate are not.
    assert sorted(asg["suspended_processes"]) == ["AZRebalance", "InstanceRefresh"]
    assert "instance_refresh" not in asg and "max_instance_lifetime" not in asg
    assert "capacity_rebalance" not in asg and "warm_pool" not in asg
    (lt,) = asg["launch_template"]
    assert unwrap(lt["version"]) == "aws_launch_template.worker.latest_version"


def test_azure_scale_set_never_picks_an_instance_and_never_rolls():
    mod = load_module("azure")
    vmss = resources(mod)[("azurerm_linux_virtual_machine_scale_set", "workers")]
    assert vmss["overprovision"] is False and vmss["upgrade_mode"] == "Manual"
    assert "rolling_upgrade_policy" not in vmss and "automatic_os_upgrade_policy" not in vmss
    assert not {t for t, _ in resources(mod)} & {"azurerm_monitor_autoscale_setting"}
    (provider,) = [b["azurerm"] for b in mod["provider"]]
    (features,) = provider["features"]
    (vmss_features,) = features["virtual_machine_scale_set"]
    assert vmss_features == {"roll_instances_when_required": False, "reimage_on_manual_upgrade": False}


def test_gcp_group_never_picks_an_instance_and_never_rolls():
    mod = load_module("gcp")
    mig = resources(mod)[("google_compute_region_instance_group_manager", "workers")]
    (policy,) = mig["update_policy"]
    assert (policy["type"], policy["instance_redistribution_type"]) == ("OPPORTUNISTIC", "NONE")
    assert not {t for t, _ in resources(mod)} & {"google_compute_region_autoscaler", "google_compute_autoscaler"}


def test_aws_instance_policy_reads_only_the_one_secret():
    doc = resources(load_module("aws"), "data")[("aws_iam_policy_document", "read_api_key")]
    (statement,) = doc["statement"]
    assert len(statement["resources"]) == 1 and referenced_vars(statement["resources"]) == {"api_key_secret_arn"}
    assert "GetSecretValue" in json.dumps(statement["actions"]) and "*" not in json.dumps(statement["actions"])


def test_azure_scale_set_does_not_overprovision_and_uses_ssh_keys_only():
    vmss = resources(load_module("azure"))[("azurerm_linux_virtual_machine_scale_set", "workers")]
    assert vmss["overprovision"] is False
    assert vmss["disable_password_authentication"] is True
    assert "admin_password" not in vmss
    assert "admin_password" not in json.dumps(load_module("azure"))


def test_azure_scale_set_uses_current_ubuntu_lts_image():
    vmss = resources(load_module("azure"))[("azurerm_linux_virtual_machine_scale_set", "workers")]
    (image,) = vmss["source_image_reference"]
    assert (image["publisher"], image["offer"], image["sku"], image["version"]) == (
        "Canonical", "ubuntu-24_04-lts", "server", "latest")


def test_azure_identity_may_read_only_the_one_secret():
    mod = load_module("azure")
    role = resources(mod)[("azurerm_role_assignment", "read_api_key")]
    assert role["role_definition_name"] == "Key Vault Secrets User"
    assert role["scope"] == "${var.key_vault_id}/secrets/${var.api_key_secret_name}"
    vmss = resources(mod)[("azurerm_linux_virtual_machine_scale_set", "workers")]
    (identity,) = vmss["identity"]
    assert "azurerm_user_assigned_identity.worker.id" in json.dumps(identity["identity_ids"])


def test_gcp_uses_a_regional_mig_with_auto_healing_and_generated_names():
    res = resources(load_module("gcp"))
    mig = res[("google_compute_region_instance_group_manager", "workers")]
    assert unwrap(mig["base_instance_name"]) == "var.name_prefix"
    assert unwrap(mig["target_size"]) == "local.group_size"
    (healing,) = mig["auto_healing_policies"]
    assert "google_compute_health_check.worker" in unwrap(healing["health_check"])
    (version,) = mig["version"]
    assert "google_compute_instance_template.worker" in unwrap(version["instance_template"])


def test_gcp_service_account_may_read_only_the_one_secret():
    member = resources(load_module("gcp"))[("google_secret_manager_secret_iam_member", "read_api_key")]
    assert member["role"] == "roles/secretmanager.secretAccessor"
    assert unwrap(member["secret_id"]) == "local.secret_name"


# ---- issue 19: a rebuild without a gap: outdated instances are told apart, stay, and the group surges ----
@pytest.mark.parametrize("module", MODULES)
def test_every_module_outputs_its_outdated_instances(module):
    assert "outdated_instances" in CONTRACT_DATA["outputs"]
    outputs = {k for block in load_module(module).get("output", []) for k in block}
    assert "outdated_instances" in outputs


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_cloud_modules_take_the_surge_from_the_runner_with_a_default_of_none(module):
    surge = declared_variables(load_module(module))["surge_instances"]
    assert surge["default"] == 0 and unwrap(surge["type"]) == "number"


def test_aws_tells_outdated_instances_by_the_build_tag_of_their_launch_template():
    mod = load_module("aws")
    res = resources(mod)
    tag_specs = res[("aws_launch_template", "worker")]["tag_specifications"]
    (instance_tags,) = [t["tags"] for t in tag_specs if t["resource_type"] == "instance"]
    assert '"octopus:build" = local.build' in unwrap(instance_tags)
    data = {k: v for block in mod["data"] for k, v in block.items()}["aws_instances"]["current"]
    assert unwrap(data["instance_tags"]["octopus:build"]) == "local.build"
    outdated = unwrap(locals_of(mod)["outdated_instances"])
    assert "data.aws_instances.current.ids" in outdated and "!contains" in outdated
    # The fingerprint covers what the instance is launched from, the rendered bootstrap included.
    build = unwrap(locals_of(mod)["build"])
    assert all(f"var.{v}" in build for v in ("ami_id", "instance_type")) and "local.user_data" in build


def test_azure_tells_outdated_instances_by_latest_model_applied():
    outdated = unwrap(locals_of(load_module("azure"))["outdated_instances"])
    assert "!i.latest_model_applied" in outdated
    vmss = resources(load_module("azure"))[("azurerm_linux_virtual_machine_scale_set", "workers")]
    assert vmss["upgrade_mode"] == "Manual"  # a model change reaches no running VM: it leaves them outdated


def test_gcp_tells_outdated_instances_by_the_build_label_of_their_template():
    mod = load_module("gcp")
    template = resources(mod)[("google_compute_instance_template", "worker")]
    assert '"octopus-build" = local.build' in unwrap(template["labels"])
    outdated = unwrap(locals_of(mod)["outdated_instances"])
    assert 'lookup(i.labels, "octopus-build", "") != local.build' in outdated
    build = unwrap(locals_of(mod)["build"])
    assert "local.startup_script" in build and "var.source_image" in build


def test_local_instances_are_never_replaced_in_place():
    tentacle = resources(load_module("local"))[("terraform_data", "tentacle")]
    (lifecycle,) = tentacle["lifecycle"]
    assert [unwrap(i) for i in lifecycle["ignore_changes"]] == ["triggers_replace"]
