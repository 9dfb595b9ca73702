"""The wait: which of the cloud's instances have registered in the initial pool, and the fleet they form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from octopus.naming import STALE_HEALTH, is_polling, thumbprint_of
from octopus.shapes import FleetWorker

#: The wait's first read again after this many seconds; the interval then doubles up to ``poll_interval``.
FIRST_POLL_SECONDS = 1.0


def next_poll_interval(waited: float, poll_interval: float) -> float:
    """Seconds until the wait reads the pool again, after ``waited`` seconds of waiting.

    Reads at 0, 1, 2, 4, 8 … seconds, then every ``poll_interval``: a fleet that registers within seconds of
    ``terraform apply`` (as a replaced or re-run fleet often does) is seen within a second or two, not a whole
    interval later, for a few extra reads while a slow fleet boots.
    """
    return min(poll_interval, max(FIRST_POLL_SECONDS, waited))


class Instance(TypedDict):
    name: str
    id: str


def _terraform_result(terraform_output: Any) -> dict[str, Any] | None:
    """``terraform_apply``'s XCom as a dict (a JSON line from older runs is decoded); ``None`` when absent."""
    if not terraform_output:
        return None
    if isinstance(terraform_output, str):
        import json

        return json.loads(terraform_output)
    return terraform_output


def instances_from(terraform_output: Any) -> list[Instance] | None:
    """The instances the cloud actually runs (``instances`` output of the module), from ``terraform_apply``'s XCom.

    ``None`` when the output is absent (a dry run plans only); a module with ``worker_names`` only gives names
    whose ids are the names themselves (no replacement can then be told apart).
    """
    terraform_output = _terraform_result(terraform_output)
    if terraform_output is None:
        return None
    outputs = terraform_output.get("outputs") or {}
    if "instances" in outputs:
        return [{"name": str(i["name"]), "id": str(i["id"])} for i in outputs["instances"] or []]
    if "worker_names" in outputs:
        # No per-instance id: a replacement cannot be told apart (id "" skips the ledger's instance checks).
        return [{"name": str(n), "id": ""} for n in outputs["worker_names"] or []]
    return None


def registered_before_from(terraform_output: Any) -> dict[str, str] | None:
    """What ``terraform_apply`` read in the initial pool before applying (see ``TerraformFleetOperator``)."""
    terraform_output = _terraform_result(terraform_output)
    if terraform_output is None:
        return None
    before = terraform_output.get("registered_before")
    return None if before is None else {str(k): str(v) for k, v in before.items()}


def instances_before_from(terraform_output: Any) -> list[Instance] | None:
    """The instances Terraform's state held before ``terraform_apply`` ran (``None`` when unknown)."""
    terraform_output = _terraform_result(terraform_output)
    if terraform_output is None:
        return None
    before = terraform_output.get("instances_before")
    return None if before is None else [{"name": str(i["name"]), "id": str(i["id"])} for i in before]


def registration_status(records: Sequence[Mapping[str, Any]], fleet_spec: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the fleet described by ``fleet_spec`` has registered, judged from one read of its initial pool.

    ``fleet_spec`` is JSON-able (it travels in a trigger's kwargs):

    * ``expected_count`` — the ``instance_count`` param: never more workers than this;
    * ``name_prefix`` — only to report look-alikes (records named like the fleet that are not in the inventory);
    * ``instances`` — ``[{"name", "id"}]`` the cloud runs (Terraform's inventory), or ``None`` when unknown;
    * ``previous`` — ``[{"name", "thumbprint", "instance_id"}]``, the fleet the ledger recorded last time, or
      ``None`` when it records none (first use, or the ledger was lost);
    * ``registered_before`` — with no ``previous``: ``{name: thumbprint}`` of the fleet-named records the initial
      pool held before this run's ``terraform apply`` (``None``: not read);
    * ``instances_before`` — the instances Terraform's state held before this run's apply (``None``: none known);
      with no ``previous``, only an instance this apply created must register again to count;
    * ``owned`` — the sealed thumbprints of the deployment's evidence (an adopted endpoint counts at once).

    A record counts for an instance only when it is a live polling record with exactly the instance's name and,
    if the ledger knew that name: a *replaced* instance (other id) must have re-registered with a new thumbprint
    (the old record stays Healthy until Octopus's next health check); an *unchanged* one must still have its
    recorded thumbprint (a record re-pointed by anyone else is suspicious, never shared).
    Returns ``{"done", "seen": {"workers", "waiting", "suspicious", "ignored"}, "summary"}``.
    """
    expected = int(fleet_spec["expected_count"])
    instances = fleet_spec.get("instances")
    previous = {p["name"].casefold(): p for p in fleet_spec.get("previous") or []}
    before = {n.casefold(): t.upper() for n, t in (fleet_spec.get("registered_before") or {}).items()}
    lost = fleet_spec.get("previous") is None
    adopted = {str(t).upper() for t in fleet_spec.get("owned") or []}
    kept_before = fleet_spec.get("instances_before")
    kept_ids = {str(i.get("id")) for i in kept_before or [] if i.get("id")}
    prefix = f"{fleet_spec['name_prefix']}-".casefold()
    by_name: dict[str, Mapping[str, Any]] = {}
    for record in records:
        by_name.setdefault((record.get("Name") or "").strip().casefold(), record)
    workers: list[dict[str, str]] = []
    waiting: list[str] = []
    suspicious: list[dict[str, str]] = []
    ignored: list[dict[str, str]] = []
    inventory = list(instances or [])[: max(expected, 0)] if instances is not None else []
    for instance in sorted(inventory, key=lambda i: i["name"]):
        record = by_name.get(instance["name"].casefold())
        if record is None:
            waiting.append(instance["name"])
            continue
        entry = _seen_entry(record)
        prior = previous.get(instance["name"].casefold())
        if not is_polling(record):
            suspicious.append({**entry, "why": "not a polling tentacle"})
        elif not entry["thumbprint"]:
            ignored.append({**entry, "why": "no thumbprint yet"})
            waiting.append(instance["name"])
        elif entry["health"] in STALE_HEALTH:
            ignored.append({**entry, "why": f"{entry['health']}: tentacle not connected"})
            waiting.append(instance["name"])
        elif (
            lost
            and instance["id"] not in kept_ids  # created by this run's apply (or the state knew no instances)
            and before.get(instance["name"].casefold()) == entry["thumbprint"]
            and entry["thumbprint"] not in adopted
        ):
            # No recorded fleet to compare with: a record that already carried this endpoint before the apply
            # may be a replaced instance's (Healthy until Octopus's next health check). Only a registration
            # made during this run proves the endpoint is the instance's now.
            ignored.append(
                {
                    **entry,
                    "why": "registered before this run's apply and the ledger records no fleet (lost or new): "
                    "waiting for the instance to register again, or adopt it (docs/ownership.md)",
                }
            )
            waiting.append(instance["name"])
        elif not instance["id"] or not prior:
            workers.append(_counted(instance, entry))
        elif prior.get("instance_id") != instance["id"] and prior["thumbprint"] == entry["thumbprint"]:
            ignored.append({**entry, "why": "record of the replaced instance: waiting for the new one to register"})
            waiting.append(instance["name"])
        elif prior.get("instance_id") == instance["id"] and prior["thumbprint"] != entry["thumbprint"]:
            suspicious.append(
                {
                    **entry,
                    "why": f"thumbprint changed from {prior['thumbprint'][:8]}… but the instance was not replaced",
                }
            )
            waiting.append(instance["name"])
        else:
            workers.append(_counted(instance, entry))
    names = {i["name"].casefold() for i in inventory}
    for record in records:
        name = (record.get("Name") or "").strip()
        if name.casefold().startswith(prefix) and name.casefold() not in names:
            suspicious.append({**_seen_entry(record), "why": "named like the fleet but not in the cloud's inventory"})
    wanted = min(expected, len(inventory))
    # An empty inventory where instances are expected is a cloud that runs nothing yet, not an empty fleet:
    # treating it as one would prune every copy.
    done = instances is not None and len(workers) >= wanted and (expected == 0 or bool(inventory))
    seen = {"workers": workers, "waiting": waiting, "suspicious": suspicious, "ignored": ignored}
    return {
        "done": done,
        "seen": seen,
        "summary": describe_registration(seen, wanted, inventory_known=instances is not None),
    }


def _counted(instance: Mapping[str, str], entry: Mapping[str, str]) -> dict[str, str]:
    return {
        "name": instance["name"],
        "thumbprint": entry["thumbprint"],
        "uri": entry["uri"],
        "instance_id": instance["id"],
    }


def _seen_entry(record: Mapping[str, Any]) -> dict[str, str]:
    return {
        "name": (record.get("Name") or "").strip(),
        "thumbprint": thumbprint_of(record),
        "uri": (record.get("Endpoint") or {}).get("Uri") or "",
        "health": record.get("HealthStatus") or "Unknown",
    }


def describe_registration(seen: Mapping[str, Any], expected: int, *, inventory_known: bool = True) -> str:
    """One human line per record seen, for a sensor's progress log and timeout message."""
    if not inventory_known:
        return "the cloud's instance inventory is unknown (no Terraform outputs): nothing can be counted"
    lines = [f"{len(seen['workers'])} of {expected} workers of this fleet registered"]
    lines += [f"  + {w['name']} {w['thumbprint'][:8]}… {w['uri']}" for w in seen["workers"]]
    lines += [f"  . {n}: waiting for its registration" for n in seen.get("waiting", [])]
    lines += [f"  - {w['name']} {w['thumbprint'][:8]}… ignored: {w['why']}" for w in seen.get("ignored", [])]
    lines += [
        f"  ! {w['name']} {w['thumbprint'][:8]}… SUSPICIOUS, never shared: {w['why']}"
        for w in seen.get("suspicious", [])
    ]
    return "\n".join(lines)


def fleet_from(seen: Mapping[str, Any]) -> list[FleetWorker]:
    return [{"name": w["name"], "thumbprint": w["thumbprint"], "uri": w["uri"]} for w in seen["workers"]]
