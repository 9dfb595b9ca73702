"""A faithful Python port of the seed post's runbook ("Sharing workers across spaces", Shawn Sesna, 2022).

Only the three API steps are ported; step 2 (Terraform) is out of scope because the benchmark's fleet is already
registered in the initial space. What is kept on purpose, because it is what the benchmark measures:

* ``Get-OctopusItems``: ``?skip=N`` recursion with the server's default page size, stopping when a page holds
  fewer items than ``ItemsPerPage``; a page with no items returns the whole collection object (and, in a
  recursion, appends it to the items, as PowerShell's ``+=`` does).
* ``Invoke-RestMethod``: a new connection for every call (module-level ``requests.get``/``requests.post``, no
  ``Session``); any non-2xx answer throws.
* Step 1: every space, then every space's pools, to find the initial space and the remaining ones.
* Step 3: ``workerpools/all`` of the initial space, then ONE read of the pool's workers (page 1 only), compared
  by count; the 60 s × 20 retry loop is kept (the benchmark's fleet is registered, so it never sleeps).
* Step 4: the initial pool and its workers again, then per remaining space its pools, its machine policies and
  one POST per worker with the post's payload (server-managed fields included), inside a ``try``/``catch`` that
  only warns. The GETs are outside the ``try``.

On a 429 this behaves like the runbook: a GET throws and nothing catches it, so the runbook stops
(:class:`RunbookAborted`); a POST's 429 is swallowed like any other POST error, and that share is lost.

One deliberate deviation: the post's payload key ``EndPoint`` is sent as ``Endpoint``. Octopus binds request
JSON to its resources case-insensitively, so the runbook worked in production; the emulator binds keys
case-sensitively and would reject every POST, which would make the port look worse than it is.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

log = logging.getLogger(__name__)

#: Invoke-RestMethod has no timeout of its own; this keeps a hung benchmark from hanging forever.
HTTP_TIMEOUT_SECONDS = 100.0


class RunbookAborted(RuntimeError):
    """An uncaught ``Invoke-RestMethod`` error (or ``Write-Error`` inside Octopus): the runbook stops here."""

    def __init__(self, step: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.status = status


class _HttpError(Exception):
    """What ``Invoke-RestMethod`` throws on a non-2xx answer."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:200]}")
        self.status = status


@dataclass
class RunbookResult:
    """What one run of the runbook did; ``aborted`` is None when all three steps finished."""

    initial_space_id: str = ""
    remaining_space_ids: list[str] = field(default_factory=list)
    posts_attempted: int = 0
    posts_ok: int = 0
    post_errors: Counter[int] = field(default_factory=Counter)  # status -> count (swallowed by the catch)
    requests: int = 0  # HTTP requests this client sent
    aborted: str | None = None
    aborted_status: int | None = None


class RunbookPort:
    """The runbook's three API steps against ``base_url`` with ``api_key``; :meth:`run` executes them in order.

    :param base_url: the server URL (``Samples.Octopus.Url``), without ``/api``.
    :param worker_pool_name: the pool every space holds (``"<Cloud> Worker Pool TF"`` in the post).
    :param number_of_workers: the expected fleet size (``Project.<Cloud>...Instance.Count``).
    :param sleep: the wait step's ``Start-Sleep`` (injectable so tests never sleep).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        worker_pool_name: str,
        number_of_workers: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")  # step 3 trims one trailing "/"; do it for all steps
        self.api_key = api_key
        self.worker_pool_name = worker_pool_name
        self.number_of_workers = number_of_workers
        self.sleep = sleep
        self.result = RunbookResult()

    # ------------------------------------------------------------------ Invoke-RestMethod

    def _invoke(self, method: str, url: str, body: Any = None) -> Any:
        self.result.requests += 1
        headers = {"X-Octopus-ApiKey": self.api_key}
        if method == "GET":
            response = requests.get(url, headers=headers, timeout=HTTP_TIMEOUT_SECONDS)
        else:
            response = requests.post(url, json=body, headers=headers, timeout=HTTP_TIMEOUT_SECONDS)
        if not 200 <= response.status_code < 300:
            raise _HttpError(response.status_code, response.text)
        return response.json() if response.content else None

    def get_octopus_items(self, octopus_uri: str, skip_count: int = 0) -> Any:
        """``Get-OctopusItems``: every item by ``skip`` recursion (or the bare response if it has no Items)."""
        skip_query = ("&skip=" if "?" in octopus_uri else "?skip=") + str(skip_count)
        result_set = self._invoke("GET", f"{octopus_uri}{skip_query}")
        items: list[Any] = []
        if isinstance(result_set, dict) and result_set.get("Items"):
            items += result_set["Items"]
            if 0 < len(result_set["Items"]) == result_set.get("ItemsPerPage"):
                rest = self.get_octopus_items(octopus_uri, skip_count + result_set["ItemsPerPage"])
                items += rest if isinstance(rest, list) else [rest]
        else:
            return result_set
        return items

    # ------------------------------------------------------------------ the steps

    def step1_get_space_list(self) -> None:
        """Get Space List: the initial space (first holding the pool) and the remaining space ids."""
        spaces = self.get_octopus_items(f"{self.base_url}/api/spaces")
        for space in _as_list(spaces):
            pools = self.get_octopus_items(f"{self.base_url}/api/{space.get('Id')}/workerPools")
            if any(_ps_eq(p.get("Name"), self.worker_pool_name) for p in _as_list(pools)):
                if not self.result.initial_space_id:
                    self.result.initial_space_id = space["Id"]
                else:
                    self.result.remaining_space_ids.append(space["Id"])

    def step3_wait_for_workers(self) -> None:
        """Wait for workers: page 1 of the pool's workers, compared by count; 20 tries 60 s apart."""
        space_id = self.result.initial_space_id
        pools = self._invoke("GET", f"{self.base_url}/api/{space_id}/workerpools/all")
        pool = next((p for p in _as_list(pools) if _ps_eq(p.get("Name"), self.worker_pool_name)), None)
        if pool is None:
            return
        url = f"{self.base_url}/api/{space_id}/workerpools/{pool['Id']}/workers"
        workers = self._invoke("GET", url)
        retries = 20
        while len(workers.get("Items") or []) != self.number_of_workers:
            if retries <= 0:
                # Write-Error: terminating inside Octopus (Calamari sets ErrorActionPreference=Stop).
                raise RunbookAborted("step 3", "Workers didn't show up in time!")
            self.sleep(60)
            retries -= 1
            workers = self._invoke("GET", url)

    def step4_add_workers(self) -> None:
        """Add workers to remaining spaces: one POST per worker per space; POST errors only warn."""
        base, initial = self.base_url, self.result.initial_space_id
        initial_pools = self.get_octopus_items(f"{base}/api/{initial}/workerPools")
        initial_pool = next(p for p in _as_list(initial_pools) if _ps_eq(p.get("Name"), self.worker_pool_name))
        workers = _as_list(self.get_octopus_items(f"{base}/api/{initial}/workerPools/{initial_pool['Id']}/workers"))
        for space_id in self.result.remaining_space_ids:
            pools = self.get_octopus_items(f"{base}/api/{space_id}/workerPools")
            pool = next((p for p in _as_list(pools) if _ps_eq(p.get("Name"), self.worker_pool_name)), None)
            if pool is None:
                continue
            policies = self.get_octopus_items(f"{base}/api/{space_id}/machinepolicies")
            policy = next((p for p in _as_list(policies) if _ps_eq(p.get("Name"), "Default Machine Policy")), {})
            for worker in workers:
                payload = {
                    "Name": worker.get("Name"),
                    "MachinePolicyId": policy.get("Id"),
                    "IsDisabled": worker.get("IsDisabled"),
                    "HealthStatus": worker.get("HealthStatus"),
                    "HasLatestCalamari": worker.get("HasLatestCalamari"),
                    "IsInProcess": True,
                    "Endpoint": worker.get("Endpoint"),  # the post's key is "EndPoint": see the module docstring
                    "WorkerPoolIds": [pool["Id"]],
                }
                self.result.posts_attempted += 1
                try:
                    self._invoke("POST", f"{base}/api/{space_id}/workers", payload)
                    self.result.posts_ok += 1
                except (_HttpError, requests.RequestException) as exc:
                    status = getattr(exc, "status", 0)
                    self.result.post_errors[status] += 1
                    log.warning("An error occured adding %s to space Id %s (%s)", worker.get("Name"), space_id, status)

    def run(self) -> RunbookResult:
        """Steps 1, 3 and 4 in order; an uncaught error stops the runbook and is recorded in ``aborted``."""
        for name, step in (
            ("step 1 (get space list)", self.step1_get_space_list),
            ("step 3 (wait for workers)", self.step3_wait_for_workers),
            ("step 4 (add workers)", self.step4_add_workers),
        ):
            try:
                step()
            except RunbookAborted as exc:
                self.result.aborted, self.result.aborted_status = str(exc), exc.status
                break
            except _HttpError as exc:
                self.result.aborted, self.result.aborted_status = f"{name}: {exc}", exc.status
                break
            except requests.RequestException as exc:
                self.result.aborted = f"{name}: {type(exc).__name__}"
                break
        return self.result


def _as_list(value: Any) -> list[Any]:
    """PowerShell's ``foreach`` over a single object visits that object; over ``$null`` visits nothing."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _ps_eq(a: Any, b: Any) -> bool:
    """PowerShell's ``-eq``/``-contains`` on strings: case-insensitive, not trimmed."""
    return isinstance(a, str) and isinstance(b, str) and a.casefold() == b.casefold()
