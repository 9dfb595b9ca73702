"""Fault injection for ``/api`` requests (configured with ``PUT /_emulator/faults``).

Config keys (all optional; PUT replaces the whole config, DELETE clears it)::

    {
      "seed": 1,                 # makes error_rate/drop_rate draws deterministic
      "latency_ms": 50,          # added to every /api request (float allowed)
      "error_rate": 0.1,         # fraction answered with error_status (default 503), JSON body
      "error_status": 503,
      "drop_rate": 0.05,         # fraction whose connection is reset with no response at all
      "fail_next": [             # the next `count` matching requests fail; entries are consumed in order
        {"count": 2, "status": 502, "method": "POST", "path_regex": "/workers$",
         "retry_after": 3, "html": true, "message": "..."},
        {"count": 1, "drop": true},         # connection reset instead of a status
        {"rate": 0.1, "status": 503, "repeat": 2, "seed": 6}   # a scheduled entry: never consumed, see below
      ],
      "forbidden_spaces": ["Spaces-2"],     # any request into the space: 403 Missing permission: WorkerView/...
      "readonly_spaces": ["Spaces-3"],      # writes into the space: 403 Missing permission: WorkerEdit
      "rate_limit": {"per_minute": 600, "burst": 20},   # token bucket per API key (or client IP), 429 + Retry-After
      "starting": true,          # every /api request (GET /api too) answers 503 like a server that is starting
      "busy_workers": ["Workers-3"]         # DELETE of these answers 400 "...currently busy..." [I]
    }

``error_rate``/``drop_rate`` draw from one seeded stream in arrival order: with concurrent clients the seed fixes
how many requests fail, not which. A *scheduled* ``fail_next`` entry (one with ``rate`` instead of ``count``) is
deterministic per request: it fails the n-th request to a given ``METHOD /path`` when a hash of (``seed``, the
entry's position, method, path, n) falls below ``rate``, whatever other requests run in between. Once it fires it
fails that request ``repeat`` times in a row (default 1), and the next request to the same method and path is then
never failed by a scheduled entry: a client that retries the same request ``repeat + 1`` times always gets through.
Scheduled entries take ``status``/``drop``/``retry_after``/``html``/``message``/``method``/``path_regex`` like
the others; they stay in the list (``count`` is not allowed with ``rate``); ``seed`` defaults to the config's.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
from typing import Any

KNOWN_KEYS = {"seed", "latency_ms", "error_rate", "error_status", "drop_rate", "fail_next", "forbidden_spaces",
              "readonly_spaces", "rate_limit", "starting", "busy_workers"}
FAIL_KEYS = {"count", "status", "method", "path_regex", "retry_after", "html", "message", "drop", "rate", "repeat",
             "seed"}
SCHEDULE_ONLY_KEYS = {"rate", "repeat", "seed"}

NGINX_HTML = ("<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}"
              "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


class FaultConfigError(ValueError):
    pass


def _matches(entry: dict[str, Any], method: str, path: str) -> bool:
    if entry.get("method") and entry["method"] != method:
        return False
    return entry.get("_re") is None or bool(entry["_re"].search(path))


def _draw(seed: str, method: str, path: str, n: int) -> float:
    """A number in [0, 1) fixed by its arguments (the same in every process, unlike ``hash``)."""
    digest = hashlib.blake2b(f"{seed}\0{method}\0{path}\0{n}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _schedule_fields(entry: dict[str, Any], config_seed: Any, position: int) -> dict[str, Any]:
    """Validated internals of a scheduled ``fail_next`` entry (``rate``, ``repeat``, ``seed``)."""
    rate, repeat = entry["rate"], entry.get("repeat", 1)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise FaultConfigError("fail_next rate must be a number in [0, 1]")
    if "count" in entry:
        raise FaultConfigError("a fail_next entry takes either count (the next requests) or rate (a schedule)")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise FaultConfigError("fail_next repeat must be an integer >= 1")
    seed = entry.get("seed", config_seed)
    # The entry's position is part of its seed: two entries with the same rate do not pick the same requests.
    return {"_rate": float(rate), "_repeat": repeat, "_seed": f"{seed!r}/{position}"}


class Faults:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.config: dict[str, Any] = {}
        self.seed: int | None = None
        self.rng = random.Random()
        self.latency_ms = 0.0
        self.error_rate = 0.0
        self.error_status = 503
        self.drop_rate = 0.0
        self.fail_next: list[dict[str, Any]] = []
        #: per (method, path): requests seen, and the scheduled burst in progress (see ``_scheduled``)
        self.schedule_state: dict[tuple[str, str], dict[str, Any]] = {}
        self.forbidden_spaces: set[str] = set()
        self.readonly_spaces: set[str] = set()
        self.rate_limit: dict[str, float] | None = None
        self.buckets: dict[str, list[float]] = {}
        self.starting = False
        self.busy_workers: set[str] = set()

    def configure(self, cfg: Any) -> None:
        if not isinstance(cfg, dict):
            raise FaultConfigError("the fault config must be a JSON object")
        unknown = sorted(set(cfg) - KNOWN_KEYS)
        if unknown:
            raise FaultConfigError(f"unknown fault key(s): {', '.join(unknown)}")

        def num(key: str, lo: float, hi: float, default: float) -> float:
            v = cfg.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise FaultConfigError(f"{key} must be a number in [{lo}, {hi}]")
            return float(v)

        latency = num("latency_ms", 0, 600_000, 0)
        error_rate = num("error_rate", 0, 1, 0)
        drop_rate = num("drop_rate", 0, 1, 0)
        error_status = int(num("error_status", 400, 599, 503))
        fail_next = []
        if not isinstance(cfg.get("fail_next", []), list):
            raise FaultConfigError("fail_next must be a list of entries")
        for position, entry in enumerate(cfg.get("fail_next", [])):
            if not isinstance(entry, dict) or set(entry) - FAIL_KEYS:
                raise FaultConfigError(f"fail_next entries take only {sorted(FAIL_KEYS)}")
            e = dict(entry)
            if "rate" in e:
                e.update(_schedule_fields(e, cfg.get("seed"), position))
            elif set(e) & SCHEDULE_ONLY_KEYS:
                raise FaultConfigError("fail_next repeat and seed go with rate (a scheduled entry)")
            else:
                e["count"] = int(e.get("count", 1))
                if e["count"] < 1:
                    raise FaultConfigError("fail_next count must be >= 1")
            if not e.get("drop"):
                status = e.get("status", 503)
                if not isinstance(status, int) or not 400 <= status <= 599:
                    raise FaultConfigError("fail_next status must be an HTTP error status (400-599)")
                e["status"] = status
            if e.get("path_regex"):
                try:
                    e["_re"] = re.compile(e["path_regex"])
                except re.error as exc:
                    raise FaultConfigError(f"bad path_regex: {exc}") from exc
            if e.get("method"):
                e["method"] = str(e["method"]).upper()
            fail_next.append(e)
        rate = cfg.get("rate_limit")
        if rate is not None:
            if not isinstance(rate, dict) or not isinstance(rate.get("per_minute"), (int, float)) \
                    or rate["per_minute"] <= 0:
                raise FaultConfigError("rate_limit needs per_minute > 0 (and optionally burst >= 1)")
            burst = rate.get("burst", rate["per_minute"])
            if not isinstance(burst, (int, float)) or burst < 1:
                raise FaultConfigError("rate_limit burst must be >= 1")
            rate = {"per_minute": float(rate["per_minute"]), "burst": float(burst)}
        for key in ("forbidden_spaces", "readonly_spaces", "busy_workers"):
            if not isinstance(cfg.get(key, []), list):
                raise FaultConfigError(f"{key} must be a list of ids")
        self.clear()
        self.config = {k: v for k, v in cfg.items()}
        self.seed = cfg.get("seed")
        self.rng = random.Random(self.seed)
        self.latency_ms, self.error_rate, self.drop_rate, self.error_status = latency, error_rate, drop_rate, \
            error_status
        self.fail_next = fail_next
        self.forbidden_spaces = {str(s).lower() for s in cfg.get("forbidden_spaces", [])}
        self.readonly_spaces = {str(s).lower() for s in cfg.get("readonly_spaces", [])}
        self.busy_workers = {str(w).lower() for w in cfg.get("busy_workers", [])}
        self.rate_limit = rate
        self.starting = bool(cfg.get("starting", False))

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.config)
        out["fail_next"] = [{k: v for k, v in e.items() if not k.startswith("_")} for e in self.fail_next]
        return out

    # ------------------------------------------------------------------ decisions
    def take_fail_next(self, method: str, path: str) -> dict[str, Any] | None:
        """The entry that fails this request, if any: the first one-shot entry that matches (consumed), or a
        scheduled entry whose schedule picks this request."""
        key = (method, path)
        state = self.schedule_state.get(key)
        if state is None and any("_rate" in e for e in self.fail_next):
            state = self.schedule_state[key] = {"seen": 0, "entry": None, "left": 0, "rest": False}
        if state is not None:
            state["seen"] += 1
        scheduled: list[dict[str, Any] | None] | None = None  # decided once, when the first scheduled entry is met
        for i, e in enumerate(self.fail_next):
            if not _matches(e, method, path):
                continue
            if "_rate" in e:
                if scheduled is None:
                    scheduled = [self._scheduled(method, path, state)]
                if scheduled[0] is e:
                    return e
                continue
            e["count"] -= 1
            if e["count"] <= 0:
                del self.fail_next[i]
            return e
        return None

    def _scheduled(self, method: str, path: str, state: dict[str, Any]) -> dict[str, Any] | None:
        """The scheduled entry that fails the ``state["seen"]``-th request to ``method path``, or None."""
        if state["left"] > 0:  # a burst in progress
            state["left"] -= 1
            return state["entry"]
        if state["rest"]:  # the request after a burst always passes
            state["rest"] = False
            return None
        for e in self.fail_next:
            if "_rate" not in e or not _matches(e, method, path):
                continue
            if _draw(e["_seed"], method, path, state["seen"]) < e["_rate"]:
                state["entry"], state["left"], state["rest"] = e, e["_repeat"] - 1, True
                return e
        return None

    def draw_drop(self) -> bool:
        return self.drop_rate > 0 and self.rng.random() < self.drop_rate

    def draw_error(self) -> bool:
        return self.error_rate > 0 and self.rng.random() < self.error_rate

    def rate_limited(self, who: str) -> int | None:
        """None when allowed, else the Retry-After seconds."""
        if not self.rate_limit:
            return None
        rate = self.rate_limit["per_minute"] / 60.0
        burst = self.rate_limit["burst"]
        now = time.monotonic()
        bucket = self.buckets.get(who)
        if bucket is None:
            bucket = self.buckets[who] = [burst, now]
        tokens = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return None
        bucket[0] = tokens
        return max(1, math.ceil((1.0 - tokens) / rate))
