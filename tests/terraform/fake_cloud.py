"""A fake aws / az / gcloud / terraform for the removal tests: records every argv, answers from a JSON state file.

Installed as one script symlinked under each tool's name (see test_tf_remove_instance.py). ``FAKE_STATE`` names a
folder with ``state.json``::

    {"aws": [{"InstanceId": ..., "LifecycleState": "InService"}],     # the autoscaling group's members
     "azure": [{"instanceId": "0", "vmId": ...}],                        # the scale set's VMs
     "gcp": [{"instance": ".../instances/<name>", "currentAction": "NONE"}],  # the MIG's managed instances
     "ignore_removal": false,                                            # the cloud "accepts" but removes nothing
     "terraform": {"outputs": {...}, "outputs_after": {...}, "plan": {...}}}   # state outputs, plan JSON

and every call is appended to ``calls.jsonl`` as ``{"tool": ..., "argv": [...]}``. Unknown commands fail.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

STATE_DIR = Path(os.environ["FAKE_STATE"])
STATE = STATE_DIR / "state.json"


def load() -> dict:
    return json.loads(STATE.read_text())


def save(state: dict) -> None:
    STATE.write_text(json.dumps(state))


def option(argv: list[str], name: str) -> list[str]:
    """The values after ``name`` up to the next option (``--name=a`` gives ["a"])."""
    for i, arg in enumerate(argv):
        if arg.startswith(name + "="):
            return [arg.split("=", 1)[1]]
        if arg == name:
            values = []
            for value in argv[i + 1 :]:
                if value.startswith("--"):
                    break
                values.append(value)
            return values
    return []


def aws(argv: list[str], state: dict) -> int:
    if argv[:2] == ["autoscaling", "describe-auto-scaling-groups"]:
        print(json.dumps({"AutoScalingGroups": [{"Instances": state["aws"]}]}))
    elif argv[:2] == ["autoscaling", "set-instance-protection"]:
        pass
    elif argv[:2] == ["autoscaling", "terminate-instance-in-auto-scaling-group"]:
        (instance_id,) = option(argv, "--instance-id")
        for member in state["aws"]:
            if member["InstanceId"] == instance_id and not state.get("ignore_removal"):
                member["LifecycleState"] = "Terminating"
        save(state)
        print(json.dumps({"Activity": {"Description": f"Terminating EC2 instance: {instance_id}"}}))
    else:
        return 2
    return 0


def az(argv: list[str], state: dict) -> int:
    if argv[:2] == ["vmss", "list-instances"]:
        print(json.dumps(state["azure"]))
    elif argv[:2] == ["vmss", "delete-instances"]:
        gone = set(option(argv, "--instance-ids"))
        if not state.get("ignore_removal"):
            state["azure"] = [vm for vm in state["azure"] if vm["instanceId"] not in gone]
        save(state)
    else:
        return 2
    return 0


def gcloud(argv: list[str], state: dict) -> int:
    if argv[:3] != ["compute", "instance-groups", "managed"] or len(argv) < 4:
        return 2
    verb = argv[3]
    if verb == "list-instances":
        print(json.dumps(state["gcp"]))
    elif verb == "delete-instances":
        (names,) = option(argv, "--instances")
        for member in state["gcp"]:
            if member["instance"].rsplit("/", 1)[-1] in names.split(",") and not state.get("ignore_removal"):
                member["currentAction"] = "DELETING"
        save(state)
    elif verb == "wait-until":
        state["gcp"] = [m for m in state["gcp"] if m["currentAction"] != "DELETING"]
        save(state)
    else:
        return 2
    return 0


def terraform(argv: list[str], state: dict) -> int:
    tf = state["terraform"]
    verb = argv[0]
    if verb in ("init", "fmt"):
        return 0
    if verb == "output":
        outputs = tf["outputs_after"] if tf.get("applied") else tf.get("outputs", {})
        print(json.dumps({k: {"value": v, "type": "dynamic", "sensitive": False} for k, v in outputs.items()}))
    elif verb == "plan":
        (out,) = [a.split("=", 1)[1] for a in argv if a.startswith("-out=")]
        Path(out).write_text("fake plan")
    elif verb == "show":
        print(json.dumps(tf.get("plan", {"resource_changes": []})))
    elif verb == "apply":
        tf["applied"] = True
        save(state)
    else:
        return 2
    return 0


def main() -> int:
    tool, argv = Path(sys.argv[0]).name, sys.argv[1:]
    with open(STATE_DIR / "calls.jsonl", "a") as log:
        # The surge the runner gives the module (rebuild without a gap), as Terraform would read it.
        surge = os.environ.get("TF_VAR_surge_instances")  # noqa: SIM112 - Terraform's own variable name
        log.write(json.dumps({"tool": tool, "argv": argv, "surge": surge}) + "\n")
    rc = {"aws": aws, "az": az, "gcloud": gcloud, "terraform": terraform}[tool](argv, load())
    if rc:
        print(f"fake {tool}: unexpected call {argv}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
