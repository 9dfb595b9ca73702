"""The emulated Octopus Server: FastAPI app for ``/api`` and the ``/_emulator`` control API.

``/api`` requests go through :class:`EmulatorASGI` (transport-level faults, request log, counters), then the
FastAPI app, whose single ``/api`` route dispatches with :mod:`octopus_emulator.routing`. Control requests
(``/_emulator/...``) are neither faulted nor logged nor counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import socket
import struct
import tempfile
import time
import traceback
from collections import Counter, deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .comms import CommsRegistry, CommsServer
from .faults import NGINX_HTML, FaultConfigError, Faults
from .leases import GLOBAL_TASKS_TEMPLATE_Q, LEASES_TEMPLATE_Q, TASKS_TEMPLATE_Q, LeaseModel, add_control_routes
from .routing import PERMISSIONS, Route, resolve
from .state import (
    COMM_STYLES,
    HEALTH_STATUSES,
    NOT_FOUND_MESSAGE,
    POLICIES_TEMPLATE_Q,
    POOLS_TEMPLATE_Q,
    SPACES_TEMPLATE_Q,
    USER_ID,
    USER_NAME,
    VALIDATION_MESSAGE,
    WORKERS_TEMPLATE_Q,
    ApiError,
    Options,
    Store,
    not_found,
    policy_record,
    validation_error,
)
from .util import INT32_MAX, canon_id, dumps, parse_bool, split_csv, thumb_key

JSON_TYPE = "application/json; charset=utf-8"
UNAUTHORIZED_MESSAGE = ("You must be logged in to perform this action. Please provide a valid API key or log in "
                        "again.")
FORBIDDEN_MESSAGE = ("You do not have permission to perform this action. Please contact your Octopus administrator. "
                     "Missing permission: {perm}")
STARTING_MESSAGE = "The Octopus Server is starting up. Please wait a moment and try again."  # [I]
RATE_LIMIT_MESSAGE = "Too many requests. Please wait {s} second(s) before trying again."  # [I]
BUSY_MESSAGE = ("This machine is currently busy: a task is running on it. Try again once the task has "
                "finished.")  # [I]
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj), status_code=status, media_type=JSON_TYPE, headers=headers)


def error_response(exc: ApiError) -> Response:
    return json_response(exc.body(), exc.status, exc.headers)


class Emulator:
    """Everything one emulator process holds: state, faults, comms registry, request log, counters."""

    def __init__(self, api_keys: list[str] | None = None, options: Options | None = None,
                 state_file: str | Path | None = None, max_log: int = 100_000):
        self.api_keys = {k for k in (api_keys or []) if k}
        self.state_file = Path(state_file) if state_file else None
        self.comms = CommsRegistry()
        self.faults = Faults()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[float, Any]] = []
        self._loading = False
        self.store = Store(options or Options(), scheduler=self._schedule, is_connected=self.comms.is_connected,
                           connection_info=self.comms.connection_info, on_change=self._save)
        self.comms.on_connect = lambda sub, thumb: self.store.tentacle_connected(sub, thumb)
        self.comms.on_disconnect = lambda sub, thumb: self.store.tentacle_disconnected(sub, thumb)
        self.leases = LeaseModel(self.store, self._schedule)  # simulated steps and worker task leases
        self.log: deque[dict[str, Any]] = deque(maxlen=max_log)
        self.comms_server = None
        self.comms_nodes: list[Any] = []  # further comms listeners (simulated HA nodes), see /_emulator/comms/nodes
        self.clear_counters()

    # ------------------------------------------------------------------ lifecycle helpers
    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        pending, self._pending = self._pending, []
        for delay, fn in pending:
            loop.call_later(delay, fn)

    def _schedule(self, delay: float, fn) -> None:
        loop = self.loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._pending.append((delay, fn))
                return
        loop.call_later(delay, fn)

    def load(self, scenario: dict[str, Any] | None) -> None:
        self._loading = True
        try:
            self.store.load(scenario)
            self.leases.reset()
        finally:
            self._loading = False
        self._save()

    def load_initial(self, scenario: dict[str, Any] | None) -> None:
        """At start-up: the state file wins when it exists, else the scenario."""
        if self.state_file is not None and self.state_file.exists():
            self.load(json.loads(self.state_file.read_text(encoding="utf-8")))
        else:
            self.load(scenario)

    def _save(self) -> None:
        if self.state_file is None or self._loading:
            return
        data = dumps(self.store.dump())
        directory = self.state_file.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.state_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # ------------------------------------------------------------------ log and counters
    def clear_counters(self) -> None:
        self.total = 0
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.by_route: Counter[str] = Counter()
        self.by_route_status: dict[str, Counter[str]] = {}
        self.faults_injected: Counter[str] = Counter()

    def clear_log(self) -> None:
        self.log.clear()
        self.clear_counters()

    def record(self, method: str, path: str, query: str, status: int | None, ctx: dict[str, Any]) -> None:
        route = f"{method} {ctx.get('route_key', '(unmatched)')}"
        status_s = str(status) if status is not None else "dropped"
        self.total += 1
        self.by_method[method] += 1
        self.by_status[status_s] += 1
        self.by_route[route] += 1
        self.by_route_status.setdefault(route, Counter())[status_s] += 1
        entry = {"method": method, "path": path, "query": _redact(query), "status": status,
                 "space_id": ctx.get("space_id"), "route": route, "time": time.time()}
        if ctx.get("fault"):
            entry["fault"] = ctx["fault"]
        self.log.append(entry)

    def count_fault(self, ctx: dict[str, Any], kind: str) -> None:
        self.faults_injected[kind] += 1
        ctx["fault"] = kind

    def counters(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_method": dict(self.by_method),
            "by_status": dict(self.by_status),
            "by_route": dict(self.by_route),
            "by_route_status": {k: dict(v) for k, v in self.by_route_status.items()},
            "faults": dict(self.faults_injected),
        }


def _redact(query: str) -> str:
    if "apikey" not in query.lower():
        return query
    parts = []
    for part in query.split("&"):
        name, sep, _ = part.partition("=")
        parts.append(f"{name}=***" if name.lower() == "apikey" else part)
    return "&".join(parts)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _query(scope) -> dict[str, str]:
    """Query parameters with lower-cased names (ASP.NET binds them case-insensitively); repeats are joined
    with commas."""
    out: dict[str, str] = {}
    qs = scope.get("query_string", b"")
    if not qs:
        return out
    for k, v in parse_qsl(qs.decode("latin-1"), keep_blank_values=True):
        lk = k.lower()
        if lk not in out:
            out[lk] = v
        elif v:
            out[lk] = f"{out[lk]},{v}" if out[lk] else v
    return out


def _api_key(scope, query: dict[str, str]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-octopus-apikey" or name == b"x-nuget-apikey":
            return value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return query.get("apikey")


class EmulatorASGI:
    """Outer ASGI layer: faults that act below the application (drop, latency, starting, fail_next, error_rate,
    rate limit) and the request log. Wraps the FastAPI app."""

    def __init__(self, emulator: Emulator, app: FastAPI):
        self.emu = emulator
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith("/_emulator"):
            client = (scope.get("client") or ("127.0.0.1",))[0]
            if not _is_loopback(client):  # the control API is for the local test harness only
                await self._respond(send, 403, dumps({"ErrorMessage": "The control API answers loopback clients "
                                                                      "only."}))
                return
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        is_api = path == "/api" or path.startswith("/api/")
        route = resolve(path) if is_api else Route(None)
        query = _query(scope)
        ctx: dict[str, Any] = {"route_key": route.key if is_api else path, "space_id": None, "fault": None,
                               "route": route, "query": query}
        scope["emulator"] = ctx
        status: list[int | None] = [None]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if not is_api or not await self._faults(scope, send, send_wrapper, ctx, query):
                await self.app(scope, receive, send_wrapper)
        finally:
            self.emu.record(method, path, scope.get("query_string", b"").decode("latin-1"), status[0], ctx)

    async def _respond(self, send, status: int, body: bytes, content_type: str = JSON_TYPE,
                       headers: dict[str, str] | None = None) -> None:
        raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        for k, v in (headers or {}).items():
            raw.append((k.lower().encode(), str(v).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def _drop(self, send) -> None:
        cycle = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None:
            raise ConnectionAbortedError("fault injection: connection dropped")
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(Exception):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
        transport.abort()
        with contextlib.suppress(Exception):
            cycle.disconnected = True

    async def _faults(self, scope, raw_send, send, ctx, query) -> bool:
        """Apply transport-level faults; True when the request was answered (or dropped) here."""
        f = self.emu.faults
        if f.latency_ms:
            self.emu.faults_injected["latency"] += 1
            await asyncio.sleep(f.latency_ms / 1000.0)
        if f.starting:
            self.emu.count_fault(ctx, "starting")
            await self._respond(send, 503, dumps({"ErrorMessage": STARTING_MESSAGE}))
            return True
        if f.fail_next:
            entry = f.take_fail_next(scope["method"], scope["path"])
            if entry is not None:
                if entry.get("drop"):
                    self.emu.count_fault(ctx, "drop")
                    await self._drop(raw_send)
                    return True
                self.emu.count_fault(ctx, "fail_next")
                st = entry["status"]
                headers = {"Retry-After": str(entry["retry_after"])} if entry.get("retry_after") is not None else {}
                if entry.get("html"):
                    body = NGINX_HTML.format(status=st, reason=REASONS.get(st, "Error")).encode()
                    await self._respond(send, st, body, "text/html", headers)
                else:
                    msg = entry.get("message") or f"{REASONS.get(st, 'Error')} (injected fault)"
                    await self._respond(send, st, dumps({"ErrorMessage": msg}), headers=headers)
                return True
        if f.draw_drop():
            self.emu.count_fault(ctx, "drop")
            await self._drop(raw_send)
            return True
        if f.draw_error():
            self.emu.count_fault(ctx, "error_rate")
            st = f.error_status
            await self._respond(send, st, dumps({"ErrorMessage": f"{REASONS.get(st, 'Error')} (injected fault)"}))
            return True
        if f.rate_limit:
            who = _api_key(scope, query) or (scope.get("client") or ("?",))[0]
            retry = f.rate_limited(who)
            if retry is not None:
                self.emu.count_fault(ctx, "rate_limit")
                await self._respond(send, 429, dumps({"ErrorMessage": RATE_LIMIT_MESSAGE.format(s=retry),
                                                      "Errors": []}), headers={"Retry-After": str(retry)})
                return True
        return False


# ---------------------------------------------------------------------------------------------------- /api
def _int_param(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name.lower())
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation_error(f"The value '{raw}' is not valid for {name}.") from None
    if value < 0 or value > INT32_MAX:
        raise validation_error(f"The value '{raw}' is not valid for {name}.")
    return value


def _link(base: str, filters: list[tuple[str, str]], skip: int, take: int) -> str:
    parts = [f"skip={skip}"] + [f"{k}={quote(v, safe=',')}" for k, v in filters] + [f"take={take}"]
    return base + "?" + "&".join(parts)


def paged(items: list[dict], item_type: str, base: str, template_q: str, filters: list[tuple[str, str]],
          skip: int, take: int) -> dict[str, Any]:
    total = len(items)
    pages = -(-total // take) if take > 0 else 0
    last = max(pages - 1, 0)
    links = {"Self": _link(base, filters, skip, take), "Template": base + template_q,
             "Page.All": _link(base, filters, 0, INT32_MAX)}
    if take > 0 and skip + take < total:
        links["Page.Next"] = _link(base, filters, skip + take, take)
    links["Page.Current"] = _link(base, filters, skip, take)
    links["Page.Last"] = _link(base, filters, last * take, take)
    return {"ItemType": item_type, "TotalResults": total, "ItemsPerPage": take, "NumberOfPages": pages,
            "LastPageNumber": last, "Items": items[skip:skip + take] if take else [], "Links": links}


def _ids_filter(items: list[dict], raw: str, prefix: str) -> list[dict]:
    wanted = {canon_id(i, prefix) for i in split_csv(raw)}
    return [r for r in items if r["Id"] in wanted]


def _name_filters(items: list[dict], query: dict[str, str], filters: list[tuple[str, str]],
                  allow_name: bool) -> list[dict]:
    if allow_name and "name" in query:
        name = query["name"].strip().lower()
        filters.append(("name", query["name"]))
        items = [r for r in items if r["Name"].lower() == name]
    if "partialname" in query:
        part = query["partialname"].lower()
        filters.append(("partialName", query["partialname"]))
        items = [r for r in items if part in r["Name"].lower()]
    return items


class Api:
    def __init__(self, emu: Emulator):
        self.emu = emu

    @property
    def store(self) -> Store:
        return self.emu.store

    # -------------------------------------------------------------- dispatch
    async def handle(self, request: Request) -> Response:
        scope = request.scope
        ctx = scope.get("emulator")
        if ctx is None:  # not behind EmulatorASGI (e.g. an in-process test client)
            ctx = {"route": resolve(scope["path"]), "query": _query(scope), "space_id": None}
        route: Route = ctx["route"]
        query: dict[str, str] = ctx["query"]
        method = request.method
        try:
            if route.kind is None:
                raise not_found()
            if method not in route.methods:
                allow = ", ".join(route.methods)
                raise ApiError(405, f"The {method} method is not allowed for this resource. Allowed: {allow}.",
                               headers={"Allow": allow})
            if not (route.kind == "root" and self.store.options.anonymous_root):
                key = _api_key(scope, query)
                if not key or key not in self.emu.api_keys:
                    raise ApiError(401, UNAUTHORIZED_MESSAGE)
            space = None
            if route.scoped:
                space = self._space(route)
                ctx["space_id"] = space["Id"]
                self._check_permission(route, method, space["Id"], ctx)
            body = None
            if method in ("POST", "PUT"):
                body = await self._body(request)
            handler = getattr(self, "h_" + route.kind)
            result = handler(method=method, route=route, query=query, space=space, body=body, ctx=ctx)
            if isinstance(result, Response):
                return result
            status = 201 if method == "POST" else 200
            return json_response(result, status)
        except ApiError as exc:
            return error_response(exc)

    def _space(self, route: Route) -> dict:
        if route.space_raw is None:
            space = self.store.default_space()
            if space is None:
                raise ApiError(404, "No default space is available: the default space is disabled or does not "
                                    "exist. Use a route that includes the space Id.")  # [I]
            return space
        space = self.store.get_space(route.space_raw)
        if space is None:
            raise ApiError(404, f"The requested space {route.space_raw} does not exist")
        return space

    def _check_permission(self, route: Route, method: str, sid: str, ctx: dict) -> None:
        f = self.emu.faults
        low = sid.lower()
        if low in f.forbidden_spaces or (method != "GET" and low in f.readonly_spaces):
            view, edit = PERMISSIONS.get(route.kind, ("WorkerView", "WorkerEdit"))
            self.emu.count_fault(ctx, "forbidden")
            raise ApiError(403, FORBIDDEN_MESSAGE.format(perm=view if method == "GET" else edit))

    async def _body(self, request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            raise validation_error("No request body was supplied")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise validation_error(f"The request body is not valid JSON: {exc}") from None

    # -------------------------------------------------------------- global resources
    def _space_links(self, sid: str) -> dict[str, str]:
        return {
            "Workers": f"/api/{sid}/workers{{/id}}{WORKERS_TEMPLATE_Q}",
            "WorkerPools": f"/api/{sid}/workerpools{{/id}}{POOLS_TEMPLATE_Q}",
            "MachinePolicies": f"/api/{sid}/machinepolicies{{/id}}{POLICIES_TEMPLATE_Q}",
            "MachinePolicyTemplate": f"/api/{sid}/machinepolicies/template",
        }

    def h_root(self, **_) -> dict:
        opts = self.store.options
        links = {"Self": "/api", "Web": "/app",
                 "Spaces": f"/api/spaces{{/id}}{SPACES_TEMPLATE_Q}",
                 "SpaceHome": "/api/{spaceId}",
                 "CurrentUser": "/api/users/me",
                 "Users": "/api/users{/id}{?skip,take,ids,filter}",
                 "SignIn": "/api/users/login{?returnUrl}",
                 "CertificateConfiguration": "/api/configuration/certificates{/id}{?skip,take}",
                 "Tasks": f"/api/tasks{{/id}}{GLOBAL_TASKS_TEMPLATE_Q}"}
        default = self.store.default_space()
        if default is not None:
            links.update(self._space_links(default["Id"]))
        return {"Application": "Octopus Deploy", "Version": opts.server_version, "ApiVersion": "3.0.0",
                "InstallationId": self.store.installation_id, "IsEarlyAccessProgram": False,
                "HasLongTermSupport": False, "Links": links}

    def h_space_home(self, space, **_) -> dict:
        sid = space["Id"]
        return {"Id": sid, "Links": {"Self": f"/api/{sid}", **self._space_links(sid)}}

    def _spaces_filtered(self, query, filters) -> list[dict]:
        items = self.store.sorted_spaces()
        if "ids" in query:
            filters.append(("ids", query["ids"]))
            items = _ids_filter(items, query["ids"], "Spaces")
        return _name_filters(items, query, filters, allow_name=True)

    def h_spaces(self, query, **_) -> dict:
        skip = _int_param(query, "skip", 0)
        take = _int_param(query, "take", self.store.options.default_take)
        filters: list[tuple[str, str]] = []
        items = self._spaces_filtered(query, filters)
        return paged(items, "Space", "/api/spaces", SPACES_TEMPLATE_Q, filters, skip, take)

    def h_spaces_all(self, query, **_) -> list:
        return self._spaces_filtered(query, [])

    def h_space(self, route, **_) -> dict:
        space = self.store.get_space(route.ids[0])
        if space is None:
            raise not_found()
        return space

    def _user(self) -> dict:
        return {"Id": USER_ID, "Username": USER_NAME, "DisplayName": "Administrator", "IsActive": True,
                "IsService": False, "EmailAddress": None, "CanPasswordBeEdited": True, "IsRequestor": True,
                "Identities": [],
                "Links": {"Self": f"/api/users/{USER_ID}", "Spaces": f"/api/users/{USER_ID}/spaces",
                          "Permissions": f"/api/users/{USER_ID}/permissions{{?spaces}}",
                          "ApiKeys": f"/api/users/{USER_ID}/apikeys{{/id}}{{?skip,take}}"}}

    def h_user_me(self, **_) -> dict:
        return self._user()

    def h_user(self, route, **_) -> dict:
        if canon_id(route.ids[0], "Users") != USER_ID:
            raise not_found()
        return self._user()

    def h_user_spaces(self, route, **_) -> list:
        if canon_id(route.ids[0], "Users") != USER_ID:
            raise not_found()
        return self.store.sorted_spaces()

    def h_certificate(self, **_) -> dict:
        return {"Id": "certificate-global", "Name": "Octopus Portal",
                "Thumbprint": self.store.options.server_thumbprint,
                "Links": {"Self": "/api/configuration/certificates/certificate-global",
                          "PublicKey": "/api/configuration/certificates/certificate-global/public-cer"}}

    # -------------------------------------------------------------- workers
    def _workers_filtered(self, sid: str, query: dict[str, str], filters: list, all_route: bool) -> list[dict]:
        items = self.store.sorted_workers(sid)
        if all_route:
            if "ids" in query:
                items = _ids_filter(items, query["ids"], "Workers")
            if "thumbprint" in query:
                t = thumb_key(query["thumbprint"])
                items = [r for r in items if thumb_key(r["Thumbprint"]) == t]
            return items
        if "name" in query:
            name = query["name"].strip().lower()
            filters.append(("name", query["name"]))
            items = [r for r in items if r["Name"].lower() == name]
        if "ids" in query:
            filters.append(("ids", query["ids"]))
            items = _ids_filter(items, query["ids"], "Workers")
        if "partialname" in query:
            part = query["partialname"].lower()
            filters.append(("partialName", query["partialname"]))
            items = [r for r in items if part in r["Name"].lower()]
        if "isdisabled" in query and query["isdisabled"] != "":
            flag = parse_bool(query["isdisabled"])
            if flag is None:
                raise validation_error(f"The value '{query['isdisabled']}' is not valid for isDisabled.")
            filters.append(("isDisabled", query["isdisabled"]))
            items = [r for r in items if r["IsDisabled"] == flag]
        if "healthstatuses" in query:
            wanted = set()
            for v in split_csv(query["healthstatuses"]):
                match = next((h for h in HEALTH_STATUSES if h.lower() == v.lower()), None)
                if match is None:
                    raise validation_error(f"The value '{v}' is not valid for healthStatuses.")
                wanted.add(match)
            filters.append(("healthStatuses", query["healthstatuses"]))
            if wanted:
                items = [r for r in items if r["HealthStatus"] in wanted]
        if "commstyles" in query:
            wanted = set()
            for v in split_csv(query["commstyles"]):
                match = next((c for c in COMM_STYLES if c.lower() == v.lower()), None)
                if match is None:
                    raise validation_error(f"The value '{v}' is not valid for commStyles.")
                wanted.add(match)
            filters.append(("commStyles", query["commstyles"]))
            if wanted:
                items = [r for r in items if r["Endpoint"]["CommunicationStyle"] in wanted]
        if "workerpoolids" in query:
            wanted = {canon_id(p, "WorkerPools") for p in split_csv(query["workerpoolids"])}
            filters.append(("workerPoolIds", query["workerpoolids"]))
            if wanted:
                items = [r for r in items if not wanted.isdisjoint(r["WorkerPoolIds"])]
        if "thumbprint" in query:
            t = thumb_key(query["thumbprint"])
            filters.append(("thumbprint", query["thumbprint"]))
            items = [r for r in items if thumb_key(r["Thumbprint"]) == t]
        if "shellnames" in query:
            wanted_shells = {s.lower() for s in split_csv(query["shellnames"])}
            filters.append(("shellNames", query["shellnames"]))
            if wanted_shells:
                items = [r for r in items if r["ShellName"].lower() in wanted_shells]
        return items

    def h_workers(self, method, query, space, body, **_):
        sid = space["Id"]
        if method == "POST":
            return self.store.create_worker(sid, body)
        skip = _int_param(query, "skip", 0)
        take = _int_param(query, "take", self.store.options.default_take)
        filters: list[tuple[str, str]] = []
        items = self._workers_filtered(sid, query, filters, all_route=False)
        return paged(items, "Worker", f"/api/{sid}/workers", WORKERS_TEMPLATE_Q, filters, skip, take)

    def h_workers_all(self, query, space, **_) -> list:
        return self._workers_filtered(space["Id"], query, [], all_route=True)

    def _worker(self, space, route) -> dict:
        rec = self.store.get_in_space("workers", space["Id"], route.ids[0])
        if rec is None:
            raise not_found()
        return rec

    def h_worker(self, method, route, space, body, ctx, **_):
        rec = self._worker(space, route)
        if method == "GET":
            return rec
        if method == "PUT":
            return self.store.update_worker(space["Id"], rec, body)
        if rec["Id"].lower() in self.emu.faults.busy_workers:
            self.emu.count_fault(ctx, "busy_worker")
            raise validation_error(BUSY_MESSAGE)
        self.emu.leases.check_delete(rec)  # 400 "currently in use" while the record holds a lease
        self.store.delete_worker(space["Id"], rec)
        return Response(b"", status_code=200)

    def h_worker_connection(self, route, space, **_) -> dict:
        rec = self._worker(space, route)
        connected = self.emu.comms.is_connected(rec["Uri"], rec["Thumbprint"])
        info = self.emu.comms.connection_info(rec["Uri"], rec["Thumbprint"]) or {}
        return {"CurrentTentacleVersion": info.get("version") if connected else None, "IsConnected": connected,
                "Logs": [], "Links": {"Self": f"/api/{space['Id']}/workers/{rec['Id']}/connection"}}

    # -------------------------------------------------------------- worker pools
    def _pools_filtered(self, sid, query, filters) -> list[dict]:
        items = self.store.sorted_pools(sid)
        if "ids" in query:
            filters.append(("ids", query["ids"]))
            items = _ids_filter(items, query["ids"], "WorkerPools")
        return _name_filters(items, query, filters, allow_name=True)

    def h_pools(self, method, query, space, body, **_):
        sid = space["Id"]
        if method == "POST":
            return self.store.create_pool(sid, body)
        skip = _int_param(query, "skip", 0)
        take = _int_param(query, "take", self.store.options.default_take)
        filters: list[tuple[str, str]] = []
        items = self._pools_filtered(sid, query, filters)
        return paged(items, "WorkerPool", f"/api/{sid}/workerpools", POOLS_TEMPLATE_Q, filters, skip, take)

    def h_pools_all(self, query, space, **_) -> list:
        return self._pools_filtered(space["Id"], query, [])

    def _pool(self, space, route) -> dict:
        rec = self.store.get_in_space("workerpools", space["Id"], route.ids[0])
        if rec is None:
            raise not_found()
        return rec

    def h_pool(self, method, route, space, body, **_):
        rec = self._pool(space, route)
        if method == "GET":
            return rec
        if method == "PUT":
            return self.store.update_pool(space["Id"], rec, body)
        self.store.delete_pool(space["Id"], rec)
        return Response(b"", status_code=200)

    def h_pool_workers(self, route, query, space, **_) -> dict:
        pool = self._pool(space, route)
        skip = _int_param(query, "skip", 0)
        take = _int_param(query, "take", self.store.options.default_take)
        items = [w for w in self.store.sorted_workers(space["Id"]) if pool["Id"] in w["WorkerPoolIds"]]
        return paged(items, "Worker", f"/api/{space['Id']}/workerpools/{pool['Id']}/workers", "{?skip,take}", [],
                     skip, take)

    # -------------------------------------------------------------- machine policies
    def _policies_filtered(self, sid, query, filters) -> list[dict]:
        items = self.store.sorted_policies(sid)
        if "ids" in query:
            filters.append(("ids", query["ids"]))
            items = _ids_filter(items, query["ids"], "MachinePolicies")
        return _name_filters(items, query, filters, allow_name=False)  # no `name` filter on the real server

    def h_policies(self, query, space, **_) -> dict:
        sid = space["Id"]
        skip = _int_param(query, "skip", 0)
        take = _int_param(query, "take", self.store.options.default_take)
        filters: list[tuple[str, str]] = []
        items = self._policies_filtered(sid, query, filters)
        return paged(items, "MachinePolicy", f"/api/{sid}/machinepolicies", POLICIES_TEMPLATE_Q, filters, skip,
                     take)

    def h_policies_all(self, query, space, **_) -> list:
        return self._policies_filtered(space["Id"], query, [])

    def h_policy(self, route, space, **_) -> dict:
        rec = self.store.get_in_space("machinepolicies", space["Id"], route.ids[0])
        if rec is None:
            raise not_found()
        return rec

    def h_policy_template(self, space, **_) -> dict:
        return policy_record(None, space["Id"], "", False)

    # -------------------------------------------------------------- worker task leases and tasks (leases.py)
    def h_leases(self, query, space, **_) -> dict:
        sid = space["Id"]
        skip = _int_param(query, "skip", 0)
        take = _int_param(query, "take", self.store.options.default_take)
        return paged(self.emu.leases.lease_records(sid), "WorkerTaskLease", f"/api/{sid}/workertaskleases",
                     LEASES_TEMPLATE_Q, [], skip, take)

    def _task_page(self, query, space_ids: list[str], base: str, template_q: str, filters: list) -> dict:
        skip = _int_param(query, "skip", 0)
        take = _int_param(query, "take", self.store.options.default_take)
        items, counts = self.emu.leases.query_tasks(space_ids, query, filters)
        page = paged(items, "Task", base, template_q, filters, skip, take)
        page["Items"] = [t.render() for t in page["Items"]]
        page["TotalCounts"] = counts
        return page

    def h_tasks(self, query, space, **_) -> dict:
        sid = space["Id"]
        return self._task_page(query, [sid], f"/api/{sid}/tasks", TASKS_TEMPLATE_Q, [])

    def h_tasks_global(self, query, **_) -> dict:
        """Tasks of every space, or of ``spaces`` (ids, or ``all``) [I]; spaces the key may not see are left out."""
        filters: list[tuple[str, str]] = []
        space_ids = [s["Id"] for s in self.store.sorted_spaces()]
        wanted = split_csv(query.get("spaces"))
        if wanted:
            filters.append(("spaces", query["spaces"]))
            if "all" not in {w.lower() for w in wanted}:
                ids = {canon_id(w, "Spaces") for w in wanted}
                space_ids = [sid for sid in space_ids if sid in ids]
        space_ids = [sid for sid in space_ids if sid.lower() not in self.emu.faults.forbidden_spaces]
        return self._task_page(query, space_ids, "/api/tasks", GLOBAL_TASKS_TEMPLATE_Q, filters)

    def h_task(self, route, space, **_) -> dict:
        tid = canon_id(route.ids[0], "ServerTasks")
        task = self.emu.leases.tasks.get(tid) if tid else None
        if task is None or task.space_id != space["Id"]:
            raise not_found()
        return task.render()

    def h_task_global(self, route, ctx, **_) -> dict:
        tid = canon_id(route.ids[0], "ServerTasks")
        task = self.emu.leases.tasks.get(tid) if tid else None
        if task is None:
            raise not_found()
        ctx["space_id"] = task.space_id
        self._check_permission(Route("task"), "GET", task.space_id, ctx)
        return task.render()


# ---------------------------------------------------------------------------------------------------- app
def create_app(emu: Emulator) -> FastAPI:
    app = FastAPI(title="Octopus Deploy emulator", docs_url=None, redoc_url=None, openapi_url=None)
    api = Api(emu)
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    app.router.add_route("/api", api.handle, methods=methods, include_in_schema=False)
    app.router.add_route("/api/{rest:path}", api.handle, methods=methods, include_in_schema=False)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            msg = NOT_FOUND_MESSAGE
        elif exc.status_code == 405:
            msg = f"The {request.method} method is not allowed for this resource."
        else:
            msg = str(exc.detail) if exc.detail else REASONS.get(exc.status_code, "Error")
        return json_response({"ErrorMessage": msg}, exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError):
        errors = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return json_response({"ErrorMessage": VALIDATION_MESSAGE, "Errors": errors}, 400)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        return json_response({"ErrorMessage": f"An unexpected error occurred: {exc}",
                              "FullException": "".join(traceback.format_exception(exc))}, 500)

    # -------------------------------------------------------------- control API
    async def body_json(request: Request, default: Any = None) -> Any:
        raw = await request.body()
        if not raw.strip():
            return default
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"invalid JSON: {exc}") from None

    def control_error(exc: Exception) -> Response:
        return json_response({"ErrorMessage": str(exc), "Errors": [str(exc)]}, 400)

    @app.get("/_emulator/ping", include_in_schema=False)
    async def ping():
        return json_response({"ok": True, "pid": os.getpid()})

    @app.post("/_emulator/reset", include_in_schema=False)
    async def reset(request: Request):
        try:
            scenario = await body_json(request)
            if scenario is not None and not isinstance(scenario, dict):
                raise ValueError("the scenario must be a JSON object")
            emu.load(scenario)
        except ApiError as exc:
            return error_response(exc)
        except (ValueError, KeyError, TypeError) as exc:
            return control_error(exc)
        store = emu.store
        return json_response({"ok": True, "spaces": len(store.spaces), "pools": len(store.pools),
                              "workers": len(store.workers), "policies": len(store.policies)})

    @app.get("/_emulator/state", include_in_schema=False)
    async def state():
        dump = emu.store.dump()
        dump["comms"] = emu.comms.snapshot()
        dump["faults"] = emu.faults.to_dict()
        dump["leases"] = emu.leases.snapshot()
        return json_response(dump)

    @app.get("/_emulator/requests", include_in_schema=False)
    async def requests_log():
        return json_response(list(emu.log))

    @app.post("/_emulator/requests/clear", include_in_schema=False)
    async def requests_clear():
        emu.clear_log()
        return json_response({"ok": True})

    @app.get("/_emulator/counters", include_in_schema=False)
    async def counters():
        return json_response(emu.counters())

    @app.get("/_emulator/faults", include_in_schema=False)
    async def faults_get():
        return json_response(emu.faults.to_dict())

    @app.put("/_emulator/faults", include_in_schema=False)
    async def faults_put(request: Request):
        try:
            emu.faults.configure(await body_json(request, {}))
        except ApiError as exc:
            return error_response(exc)
        except FaultConfigError as exc:
            return control_error(exc)
        return json_response(emu.faults.to_dict())

    @app.delete("/_emulator/faults", include_in_schema=False)
    async def faults_delete():
        emu.faults.clear()
        return json_response({"ok": True})

    @app.get("/_emulator/comms", include_in_schema=False)
    async def comms():
        return json_response(emu.comms.snapshot())

    @app.post("/_emulator/comms/drop", include_in_schema=False)
    async def comms_drop(request: Request):
        try:
            body = await body_json(request, {}) or {}
        except ApiError as exc:
            return error_response(exc)
        if not isinstance(body, dict):
            return control_error(ValueError("the body must be a JSON object"))
        servers = [s for s in (emu.comms_server, *emu.comms_nodes) if s is not None]
        n = sum(server.drop(body.get("subscription")) for server in servers)
        return json_response({"ok": True, "dropped": n})

    def comms_nodes_view() -> list[dict[str, Any]]:
        servers = [s for s in (emu.comms_server, *emu.comms_nodes) if s is not None]
        return [{"node": s.node, "port": s.port} for s in servers]

    @app.get("/_emulator/comms/nodes", include_in_schema=False)
    async def comms_nodes_get():
        return json_response(comms_nodes_view())

    @app.post("/_emulator/comms/nodes", include_in_schema=False)
    async def comms_nodes_add(request: Request):
        """Listen on one more comms port, like another node of an HA cluster: {"port": 0} picks a free one."""
        try:
            body = await body_json(request, {}) or {}
        except ApiError as exc:
            return error_response(exc)
        port = body.get("port", 0) if isinstance(body, dict) else None
        if emu.comms_server is None or not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            return control_error(ValueError("needs a running comms channel and a body {\"port\": 0-65535}"))
        host = emu.comms_server.sock.getsockname()[0]
        try:
            node = await CommsServer.listen(emu.comms, host, port, f"node-{len(emu.comms_nodes) + 2}")
        except OSError as exc:
            return control_error(ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"))
        emu.comms_nodes.append(node)
        return json_response({"node": node.node, "port": node.port, "nodes": comms_nodes_view()})

    @app.post("/_emulator/health-check", include_in_schema=False)
    async def health_check():
        return json_response(emu.store.health_check_all())

    add_control_routes(app, lambda: emu.leases)  # /_emulator/tasks, /_emulator/leases, /_emulator/server-restart

    return app


def build(api_keys: list[str] | None = None, options: Options | None = None, state_file: str | Path | None = None,
          scenario: dict[str, Any] | None = None) -> tuple[Emulator, EmulatorASGI]:
    """An Emulator and the ASGI app to serve (state loaded from ``state_file`` if it exists, else ``scenario``)."""
    emu = Emulator(api_keys, options, state_file)
    emu.load_initial(scenario)
    return emu, EmulatorASGI(emu, create_app(emu))


def new_api_key() -> str:
    return "API-" + secrets.token_hex(13).upper()
