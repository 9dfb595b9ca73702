"""A simulated Octopus Tentacle: ``register-worker --comms-style TentacleActive``, then (``--run``) a running
polling tentacle that holds the emulator's comms channel.

Registration follows ``Tentacle register-worker`` (docs reference §5) call for call and uses only the public
Octopus REST API, so it also works against a real Octopus Server:

1. local checks; 2. comms probe (TCP connect to the polling port); 3. ``GET /api`` (503 retried);
4. ``GET /api/users/me`` -> ``GET /api/users/{id}/spaces`` -> ``GET /api/{spaceId}``;
5. ``GET /api/configuration/certificates/certificate-global``;
6. ``GET /api/{spaceId}/workers?name=`` (following ``Page.Next``); an existing worker without ``--force``
   fails;
7. with ``--policy``: every page of ``/machinepolicies``; 8. each ``--workerpool`` by name, slug, then Id;
9. ``POST /api/{spaceId}/workers`` (201) or, with ``--force``, ``PUT`` to the existing worker's
   ``Links.Self``;
10. the trusted-server entry (with its reused ``poll://`` subscription id) is stored in ``--home``.

The API key comes from ``--apiKey`` or the environment variable ``OCTOPUS_API_KEY``; it is never printed.
Entry point: :func:`main` (``python -m octopus_emulator register-worker ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from octopus_emulator.tentacle_state import (
    TentacleHome,
    TentacleStateError,
    TrustedServer,
    new_subscription_id,
)

log = logging.getLogger("octopus_emulator.tentacle")

API_KEY_ENV = "OCTOPUS_API_KEY"
SIMULATED_TENTACLE_VERSION = "8.1.2"
DEFAULT_COMMS_PORT = 10943
HTTP_TIMEOUT = 30.0
ROOT_503_RETRY_SECONDS = 60.0  # Octopus.Client retries a starting server's GET /api every 0.5 s
PROBE_ATTEMPTS = 5  # Tentacle's OctopusServerChecker tries the comms port 5 times
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TERMINATED = 0, 1, 2, 143


class RegistrationError(Exception):
    """A failure explained to the operator; the command exits with status 1."""


class _Terminated(BaseException):
    """SIGTERM/SIGINT arrived (a BaseException so no ``except Exception`` swallows it)."""


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``register-worker`` argument parser (Tentacle's flag names; option names are case-sensitive)."""
    p = argparse.ArgumentParser(
        prog="python -m octopus_emulator register-worker",
        description="Register a simulated polling Tentacle as an Octopus worker, optionally keep it running.",
        allow_abbrev=False,
    )
    tentacle = p.add_argument_group("Tentacle register-worker options")
    tentacle.add_argument("--server", required=True, help="Octopus Server URL, e.g. http://127.0.0.1:8065")
    tentacle.add_argument(
        "--apiKey", "--apikey", dest="api_key", help=f"API key (default: environment variable {API_KEY_ENV})"
    )
    tentacle.add_argument("--name", help="worker name (default: the hostname)")
    tentacle.add_argument(
        "--workerpool",
        "--workerPool",
        dest="worker_pools",
        action="append",
        default=[],
        help="worker pool name, slug or Id; repeat for several pools",
    )
    tentacle.add_argument("--space", help="space name (default: the default space)")
    tentacle.add_argument("--policy", help="machine policy name (default: the space's default policy)")
    tentacle.add_argument("-f", "--force", action="store_true", help="update an existing worker of the same name")
    tentacle.add_argument("--comms-style", default="TentacleActive", help="only TentacleActive (polling) is simulated")
    tentacle.add_argument("--server-comms-port", type=int, default=DEFAULT_COMMS_PORT, help="polling port (10943)")
    tentacle.add_argument(
        "--server-comms-address",
        help="polling address, e.g. https://octopus.example:10943 (default: --server host)",
    )
    tentacle.add_argument("--proxy", help=argparse.SUPPRESS)
    sim = p.add_argument_group("simulator options")
    sim.add_argument("--home", help="state directory: certificate, trust entries, status (default: per name)")
    sim.add_argument("--run", action="store_true", help="after registering, stay up as a running tentacle")
    sim.add_argument("--boot-delay", type=float, default=0.0, metavar="SECONDS", help="sleep first, like a booting VM")
    sim.add_argument("--ping-interval", type=float, default=10.0, metavar="SECONDS", help="comms keep-alive interval")
    sim.add_argument("--poll-server-address", dest="poll_servers", action="append", default=[], metavar="HOST:PORT",
                     help="with --run, also poll this HA node with the same subscription (what `Tentacle poll-server "
                          "--server-comms-address` adds); repeatable")
    return p


@dataclass
class Options:
    """Validated ``register-worker`` options."""

    server: str
    api_key: str = field(repr=False)
    name: str
    worker_pools: list[str]
    space: str | None
    policy: str | None
    force: bool
    comms_host: str
    comms_port: int
    home: str
    run: bool
    boot_delay: float
    ping_interval: float
    poll_servers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def comms_address(self) -> str:
        """The trusted-server address as Tentacle stores it for polling: ``https://host:port``."""
        return f"https://{self.comms_host}:{self.comms_port}"


def parse_options(argv: list[str], environ: dict[str, str] | None = None) -> Options:
    """Parse and check ``argv`` (step 1, local checks); raises RegistrationError saying what is wrong."""
    environ = os.environ if environ is None else environ
    a = build_parser().parse_args(argv)

    server = a.server.strip()
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistrationError(f"--server must be an http(s) URL such as http://127.0.0.1:8065, got {a.server!r}")
    if parts.query or parts.fragment:
        raise RegistrationError(f"--server must not contain a query or fragment, got {a.server!r}")
    server = server.rstrip("/")

    api_key = (a.api_key if a.api_key is not None else environ.get(API_KEY_ENV, "")).strip()
    if not api_key:
        raise RegistrationError(f"Please specify an API key with --apiKey or the {API_KEY_ENV} environment variable.")

    pools = [p.strip() for p in a.worker_pools]
    if not pools or not pools[0]:
        raise RegistrationError("Please specify a worker pool name, slug or Id, e.g., --workerpool=Default")
    if any(not p for p in pools):
        raise RegistrationError("--workerpool must not be empty.")

    if a.comms_style.strip().lower() == "tentaclepassive":
        raise RegistrationError(
            "--comms-style TentaclePassive (listening) is not simulated; use --comms-style TentacleActive."
        )
    if a.comms_style.strip().lower() != "tentacleactive":
        raise RegistrationError(
            f"Please specify a valid communications style, e.g. --comms-style=TentacleActive (got {a.comms_style!r})."
        )
    if a.proxy:
        raise RegistrationError(
            "Option --proxy can only be used with --comms-style=TentaclePassive.  "
            "To set a proxy for a polling "
            "Tentacle use the polling-proxy command first and then register the Tentacle with register-with."
        )
    if not 0 < a.server_comms_port < 65536:
        raise RegistrationError(f"--server-comms-port must be between 1 and 65535, got {a.server_comms_port}")

    comms_host, comms_port = parts.hostname, a.server_comms_port
    if a.server_comms_address:
        addr = a.server_comms_address.strip()
        c = urlsplit(addr if "://" in addr else f"https://{addr}")
        if not c.hostname:
            raise RegistrationError(f"--server-comms-address must be a host or URL, got {a.server_comms_address!r}")
        try:
            comms_host, comms_port = c.hostname, c.port or comms_port
        except ValueError as exc:
            raise RegistrationError(f"--server-comms-address has an invalid port: {a.server_comms_address!r}") from exc

    poll_servers = []
    for addr in a.poll_servers:
        c = urlsplit(addr if "://" in addr else f"https://{addr}")
        try:
            if not c.hostname or not c.port:
                raise ValueError
            poll_servers.append((c.hostname, c.port))
        except ValueError:
            raise RegistrationError(
                f"--poll-server-address must be HOST:PORT or https://HOST:PORT, got {addr!r}"
            ) from None

    name = (a.name if a.name is not None else socket.gethostname()).strip()
    if not name:
        raise RegistrationError("--name must not be empty.")
    if a.boot_delay < 0:
        raise RegistrationError(f"--boot-delay must be >= 0 seconds, got {a.boot_delay}")
    if a.ping_interval <= 0:
        raise RegistrationError(f"--ping-interval must be > 0 seconds, got {a.ping_interval}")

    home = a.home or os.path.join(
        environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"),
        "octopus-tentacle-sim",
        re.sub(r"[^A-Za-z0-9._-]", "_", name),
    )
    return Options(
        server=server,
        api_key=api_key,
        name=name,
        worker_pools=pools,
        space=a.space,
        policy=a.policy,
        force=a.force,
        comms_host=comms_host,
        comms_port=comms_port,
        home=home,
        run=a.run,
        boot_delay=a.boot_delay,
        ping_interval=a.ping_interval,
        poll_servers=poll_servers,
    )


# ----------------------------------------------------------------------------------------------------
# REST client (public Octopus API only)
# ----------------------------------------------------------------------------------------------------
_TEMPLATE_EXPR = re.compile(r"\{([+#./;?&]?)([^}]*)\}")


def expand(template: str, **values: Any) -> str:
    """Expand an RFC 6570 link template (the operators Octopus uses); unset variables are dropped."""

    def one(m: re.Match[str]) -> str:
        op, names = m.group(1), [n.split(":")[0].rstrip("*") for n in m.group(2).split(",")]
        safe = ":/?#[]@!$&'()*+,;=" if op in "+#" else ""
        pairs = [(n, quote(str(values[n]), safe=safe)) for n in names if values.get(n) is not None]
        if not pairs:
            return ""
        if op in ("?", "&"):
            return op + "&".join(f"{n}={v}" for n, v in pairs)
        if op == "/":
            return "".join("/" + v for _, v in pairs)
        return ("#" if op == "#" else "") + ",".join(v for _, v in pairs)

    return _TEMPLATE_EXPR.sub(one, template)


def link(resource: dict[str, Any], name: str) -> str | None:
    """A link of ``resource`` by name, case-insensitively (as Octopus.Client's LinkCollection)."""
    for key, value in (resource.get("Links") or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def _error_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        msg = str(body.get("ErrorMessage") or "").strip()
        errors = [str(e) for e in body.get("Errors") or []]
        if errors:
            msg = f"{msg} {'; '.join(errors)}".strip()
        if msg:
            return msg
    text = resp.text.strip().replace("\n", " ")
    return text[:300] or resp.reason or "no response body"


class OctopusApi:
    """Minimal Octopus REST client: API-key auth, link resolution under a path prefix, Page.Next paging."""

    def __init__(self, server: str, api_key: str, timeout: float = HTTP_TIMEOUT) -> None:
        parts = urlsplit(server)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"X-Octopus-ApiKey": api_key, "Accept": "application/json"})

    def url(self, link_or_path: str) -> str:
        """Absolute URL of a server-relative link; a server under a path prefix gets the prefix once."""
        if link_or_path.startswith(("http://", "https://")):
            return link_or_path
        path = "/" + link_or_path.removeprefix("~").lstrip("/")
        if self._prefix and not (path == self._prefix or path.startswith(self._prefix + "/")):
            path = self._prefix + path
        return self._origin + path

    def request(self, method: str, link_or_path: str, *, body: Any = None, expect: tuple[int, ...] = (200,)) -> Any:
        """Send one request; non-expected statuses raise RegistrationError with the server's ErrorMessage."""
        url = self.url(link_or_path)
        shown = urlsplit(url).path + (f"?{urlsplit(url).query}" if urlsplit(url).query else "")
        try:
            resp = self.session.request(method, url, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RegistrationError(
                f"Could not reach the Octopus Server for {method} {shown}: {type(exc).__name__}. "
                f"Check --server ({self._origin + self._prefix}) and that the server is running."
            ) from None
        if resp.status_code not in expect:
            hint = " Check the API key." if resp.status_code == 401 else ""
            raise RegistrationError(f"{method} {shown} returned HTTP {resp.status_code}: {_error_message(resp)}{hint}")
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise RegistrationError(
                f"{method} {shown} returned a non-JSON body (is --server an Octopus Server?)"
            ) from None

    def get(self, link_or_path: str) -> Any:
        return self.request("GET", link_or_path)

    def pages(self, first: str) -> Iterator[dict[str, Any]]:
        """Yield the items of a paged collection, following ``Page.Next`` while pages have items."""
        seen: set[str] = set()
        url: str | None = first
        while url and url not in seen:
            seen.add(url)
            page = self.get(url)
            if not isinstance(page, dict) or not isinstance(page.get("Items"), list):
                raise RegistrationError(f"GET {url} did not return an Octopus collection.")
            yield from page["Items"]
            if not page["Items"]:
                return
            url = link(page, "Page.Next")

    def load_root(self, deadline_seconds: float = ROOT_503_RETRY_SECONDS) -> dict[str, Any]:
        """``GET /api``, retried every 0.5 s while the server answers 503 (starting up)."""
        deadline = time.monotonic() + deadline_seconds
        told = False
        while True:
            try:
                return self.request("GET", "/api")
            except RegistrationError as exc:
                if " returned HTTP 503" not in str(exc) or time.monotonic() >= deadline:
                    raise
                if not told:
                    log.info(
                        "The Octopus Server is starting (HTTP 503); retrying for up to %.0f s",
                        deadline_seconds,
                    )
                    told = True
                time.sleep(0.5)


# ----------------------------------------------------------------------------------------------------
# Comms channel (emulator analogue of the polling port, docs/design.md)
# ----------------------------------------------------------------------------------------------------
class CommsChannel:
    """One TCP connection to the comms port: a JSON hello, then ping/pong keep-alives. Closing it = gone."""

    def __init__(self, host: str, port: int, subscription: str, thumbprint: str, io_timeout: float = 10.0) -> None:
        self.host, self.port = host, port
        self.subscription, self.thumbprint = subscription, thumbprint
        self.io_timeout = io_timeout
        self.sock: socket.socket | None = None
        self._buf = b""
        self._ping = 0

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self) -> None:
        """Open the TCP connection (the comms probe); raises OSError when the port is closed."""
        self.close()
        self.sock = socket.create_connection((self.host, self.port), timeout=self.io_timeout)

    def hello(self) -> None:
        """Identify this tentacle; raises OSError unless the server answers ``{"ok": true}``."""
        self._send(
            {
                "subscription": self.subscription,
                "thumbprint": self.thumbprint,
                "version": SIMULATED_TENTACLE_VERSION,
                "os": platform.system() or "Unknown",
                "shell": "Bash",
                "architecture": platform.machine() or "Unknown",
            }
        )
        reply = self._read_line()
        if not (isinstance(reply, dict) and reply.get("ok") is True):
            raise OSError(f'the comms port answered {reply!r} instead of {{"ok": true}}')

    def ping(self) -> None:
        """Send a ping and wait for the matching pong; raises OSError when the connection is gone."""
        self._ping += 1
        self._send({"ping": self._ping})
        while True:
            reply = self._read_line()
            if isinstance(reply, dict) and reply.get("pong") == self._ping:
                return

    def wait(self, seconds: float) -> None:
        """Idle up to ``seconds``; raises OSError if the server closes the connection meanwhile."""
        assert self.sock is not None
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([self.sock], [], [], left)
            if readable:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionResetError("the server closed the comms connection")
                self._buf += chunk  # unsolicited lines are ignored

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock, self._buf = None, b""

    def _send(self, obj: dict[str, Any]) -> None:
        if self.sock is None:
            raise ConnectionError("not connected")
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def _read_line(self) -> Any:
        if self.sock is None:
            raise ConnectionError("not connected")
        while b"\n" not in self._buf:
            if len(self._buf) > 65536:
                raise OSError("the comms port sent an over-long line")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("the server closed the comms connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise OSError("the comms port does not speak the emulator's comms protocol") from None


def probe_comms(channel: CommsChannel, keep: bool) -> bool:
    """Step 2: check the comms port is open (5 tries). With ``keep``, also say hello and keep the connection.

    Returns False (after a warning) when no comms channel is available: the worker still registers, and
    stays Unavailable until the tentacle can connect.
    """
    log.info("Checking connectivity on the server communications port %s:%d...", channel.host, channel.port)
    error: OSError | None = None
    for attempt in range(PROBE_ATTEMPTS):
        try:
            channel.connect()
            break
        except OSError as exc:
            error = exc
            if attempt + 1 < PROBE_ATTEMPTS:
                time.sleep(0.1 * (attempt + 1))
    else:
        log.warning(
            "Could not connect to the server communications port %s:%d (%s); registering anyway, the worker "
            "stays Unavailable until this tentacle can connect.",
            channel.host,
            channel.port,
            error,
        )
        return False
    if not keep:
        channel.close()
        log.info("Connected successfully")
        return True
    try:
        channel.hello()
    except OSError as exc:
        channel.close()
        log.warning(
            "The communications port %s:%d is open but %s; continuing without a comms channel.",
            channel.host,
            channel.port,
            exc,
        )
        return False
    log.info("Connected successfully")
    return True


# ----------------------------------------------------------------------------------------------------
# Registration (steps 3-9)
# ----------------------------------------------------------------------------------------------------
def _check_version(root: dict[str, Any]) -> None:
    version = str(root.get("Version") or "").strip()
    if not version:
        raise RegistrationError("Unable to determine the Octopus Server version.")
    m = re.match(r"(\d+)", version)
    if not m:
        raise RegistrationError(f"Unable to parse the Octopus Server version {version!r}.")
    major = int(m.group(1))
    if major != 0 and major < 3:
        raise RegistrationError(f"You cannot register a 8.* Octopus Tentacle with a {major}.* Octopus Server.")
    api_version = str(root.get("ApiVersion") or "")
    if api_version and not re.fullmatch(r"3\.0\.\d+", api_version):
        raise RegistrationError(f"The Octopus Server's API version {api_version} is not supported (need 3.0.x).")


def resolve_space(api: OctopusApi, root: dict[str, Any], space_name: str | None) -> dict[str, Any]:
    """Step 4: the space's home document (``{Id, Links}``); without spaces support, the root document."""
    if not link(root, "Spaces"):
        if space_name:
            raise RegistrationError(
                f'A space with name "{space_name}" was requested, but this version of Octopus Server does '
                "not support spaces. Please upgrade Octopus Server to a version which supports spaces, "
                "or remove the "
                '"space" parameter.'
            )
        return root
    me = api.get(link(root, "CurrentUser") or "/api/users/me")
    spaces_link = link(me, "Spaces") or f"/api/users/{me.get('Id')}/spaces"
    spaces = api.get(spaces_link)
    if not isinstance(spaces, list):
        raise RegistrationError(f"GET {spaces_link} did not return a list of spaces.")
    if space_name:
        wanted = space_name.strip().lower()
        matches = [s for s in spaces if str(s.get("Name") or "").strip().lower() == wanted]
        if not matches:
            raise RegistrationError(
                f'A space with name "{space_name}" could not be found. Ensure you have spelled the space '
                "name "
                "correctly and that the user has access to this space."
            )
        if len(matches) > 1:
            raise RegistrationError(f'More than one space is named "{space_name}"; rename one of them.')
        space = matches[0]
    else:
        defaults = [s for s in spaces if s.get("IsDefault")]
        if len(defaults) != 1:
            raise RegistrationError(
                'No "space" was specified, and the default space is disabled or inaccessible to this user. '
                'Please select a space using the "space" parameter.'
            )
        space = defaults[0]
    home_tpl = link(root, "SpaceHome") or "/api/{spaceId}"
    space_home = api.get(expand(home_tpl, spaceId=space["Id"]))
    space_home.setdefault("Id", space["Id"])
    return space_home


def _collection_link(api: OctopusApi, space: dict[str, Any], root: dict[str, Any], name: str, fallback: str) -> str:
    return link(space, name) or link(root, name) or fallback.format(space=space.get("Id"))


def find_existing_worker(api: OctopusApi, workers_tpl: str, name: str) -> dict[str, Any] | None:
    """Step 6: ``GET workers?name=`` through every page; first ``Name.Trim()`` match, case-insensitively."""
    wanted = name.strip().lower()
    for worker in api.pages(expand(workers_tpl, name=name)):
        if str(worker.get("Name") or "").strip().lower() == wanted:
            return worker
    return None


def find_policy(api: OctopusApi, policies_tpl: str, policy: str) -> dict[str, Any]:
    """Step 8: every page of machine policies (no ``name`` filter exists), matched case-insensitively."""
    wanted = policy.strip().lower()
    for item in api.pages(expand(policies_tpl)):
        if str(item.get("Name") or "").strip().lower() == wanted:
            return item
    raise RegistrationError(
        f"Could not find the machine policy named {policy} on the Octopus Server. Ensure the machine policy "
        "exists and you have permission to access it."
    )


def find_pool(api: OctopusApi, pools_tpl: str, pool: str) -> dict[str, Any]:
    """Step 8: a worker pool by name (full listing), then slug (listed again), then Id (``?ids=``)."""
    wanted = pool.strip().lower()
    for key in ("Name", "Slug"):
        for item in api.pages(expand(pools_tpl)):
            if str(item.get(key) or "").strip().lower() == wanted:
                return item
    for item in api.pages(expand(pools_tpl, ids=pool.strip())):
        if str(item.get("Id") or "").lower() == wanted:
            return item
    raise RegistrationError(
        f"Could not find the worker pool with name, slug or Id {pool} on the Octopus Server. "
        "Ensure the worker "
        "pool exists and you have permission to access it."
    )


@dataclass
class Registration:
    """The outcome of a successful registration."""

    worker: dict[str, Any]
    space_id: str
    server_thumbprint: str
    created: bool


def register(api: OctopusApi, opts: Options, thumbprint: str, subscription: str) -> Registration:
    """Steps 3-9: find the space, pools and policy and create (or, with force, update) the worker."""
    log.info("Registering the tentacle with the server at %s", opts.server)
    root = api.load_root()
    if not isinstance(root, dict):
        raise RegistrationError("GET /api did not return the Octopus root document (is --server right?)")
    _check_version(root)
    space = resolve_space(api, root, opts.space)
    space_id = str(space.get("Id") or "")

    cert_tpl = link(root, "CertificateConfiguration") or "/api/configuration/certificates{/id}"
    cert = api.get(expand(cert_tpl, id="certificate-global"))
    server_thumbprint = str((cert or {}).get("Thumbprint") or "")
    if not server_thumbprint:
        raise RegistrationError("The server's certificate-global has no Thumbprint.")

    workers_tpl = _collection_link(api, space, root, "Workers", "/api/{space}/workers{{/id}}{{?name,ids}}")
    existing = find_existing_worker(api, workers_tpl, opts.name)
    if existing is not None and not opts.force:
        raise RegistrationError(
            f"A worker named '{opts.name}' already exists in the environment. "
            "Use the 'force' parameter if you "
            "intended to update the existing worker."
        )

    policy = None
    if opts.policy:
        policies_tpl = _collection_link(api, space, root, "MachinePolicies", "/api/{space}/machinepolicies{{/id}}")
        policy = find_policy(api, policies_tpl, opts.policy)

    pools_tpl = _collection_link(api, space, root, "WorkerPools", "/api/{space}/workerpools{{/id}}{{?ids}}")
    pool_ids: list[str] = []
    for value in opts.worker_pools:
        pool_id = str(find_pool(api, pools_tpl, value)["Id"])
        if pool_id.lower() not in (p.lower() for p in pool_ids):  # a reference collection: no duplicates
            pool_ids.append(pool_id)

    endpoint = {"CommunicationStyle": "TentacleActive", "Uri": subscription, "Thumbprint": thumbprint}
    if existing is None:
        body: dict[str, Any] = {
            "Name": opts.name,
            "IsDisabled": False,
            "SpaceId": space_id or None,
            "WorkerPoolIds": pool_ids,
            "Endpoint": endpoint,
        }
        if policy is not None:
            body["MachinePolicyId"] = policy["Id"]
        if not space_id:
            body.pop("SpaceId")
        worker = api.request("POST", expand(workers_tpl), body=body, expect=(201,))
        created = True
    else:
        body = dict(existing)
        body.update(Name=opts.name, Endpoint=endpoint, WorkerPoolIds=pool_ids)
        if policy is not None:
            body["MachinePolicyId"] = policy["Id"]
        self_link = link(existing, "Self") or expand(workers_tpl, id=existing["Id"])
        worker = api.request("PUT", self_link, body=body, expect=(200,))
        created = False
    if not isinstance(worker, dict) or not worker.get("Id"):
        raise RegistrationError("The server accepted the worker but returned no worker Id.")
    return Registration(worker=worker, space_id=space_id, server_thumbprint=server_thumbprint, created=created)


# ----------------------------------------------------------------------------------------------------
# Running tentacle
# ----------------------------------------------------------------------------------------------------
def run_forever(
    channel: CommsChannel,
    ping_interval: float,
    max_backoff: float = 5.0,
    disk_present: Callable[[], bool] = lambda: True,
) -> None:
    """Hold the comms connection until terminated or the home directory is deleted; reconnect with backoff
    (e.g. after an emulator restart)."""
    backoff = 0.2
    announced_down = False
    while True:
        if not disk_present():
            log.warning("The tentacle's home directory is gone (the VM's disk was deleted); stopping")
            return
        if not channel.connected:
            try:
                channel.connect()
                channel.hello()
            except OSError as exc:
                channel.close()
                if not announced_down:
                    log.warning("No comms channel to %s:%d (%s); retrying", channel.host, channel.port, exc)
                    announced_down = True
                time.sleep(backoff)
                backoff = min(backoff * 2, max_backoff)
                continue
            log.info("Comms channel to %s:%d established", channel.host, channel.port)
            backoff, announced_down = 0.2, False
        try:
            channel.wait(ping_interval)
            channel.ping()
        except OSError as exc:
            log.warning("Lost the comms channel (%s); reconnecting", exc)
            channel.close()


# ----------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------
def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


class _RedactFilter(logging.Filter):
    """Replace the API key in any log record (defence in depth: nothing should log it in the first place)."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret and self.secret in message:
            record.msg, record.args = redact(message, self.secret), None
        return True


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise _Terminated(signum)


COMMANDS = ("register-worker",)


def main(argv: list[str]) -> int:
    """Run ``register-worker``; ``argv`` may start with the command name. Returns the exit status."""
    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        command = argv.pop(0)
        if command not in COMMANDS:
            print(
                f"unknown tentacle command {command!r}; the simulator supports: {', '.join(COMMANDS)}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    previous: dict[int, Any] = {}
    home: TentacleHome | None = None
    secret = ""
    running = False
    channel: CommsChannel | None = None
    try:
        try:
            opts = parse_options(argv)
        except SystemExit as exc:  # argparse usage errors and --help
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        secret = opts.api_key
        handler.addFilter(_RedactFilter(secret))
        with contextlib.suppress(ValueError):  # signals can only be set from the main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, _raise_terminated)

        home = TentacleHome(opts.home)
        home.write_status("booting")
        if opts.boot_delay:
            log.info("Booting for %.1f s", opts.boot_delay)
            time.sleep(opts.boot_delay)
        home.write_status("registering")
        thumbprint = home.ensure_certificate()
        trusted = home.find_trusted_server(opts.comms_address, "TentacleActive")
        subscription = trusted.subscription_id if trusted and trusted.subscription_id else new_subscription_id()

        channel = CommsChannel(opts.comms_host, opts.comms_port, subscription, thumbprint)
        probe_comms(channel, keep=opts.run)
        api = OctopusApi(opts.server, opts.api_key)
        result = register(api, opts, thumbprint, subscription)
        home.add_or_update_trusted_server(
            TrustedServer(result.server_thumbprint, opts.comms_address, "TentacleActive", subscription)
        )
        worker = result.worker
        log.info(
            "Machine registered successfully: worker %s (%s) in %s, %s, thumbprint %s",
            worker.get("Id"),
            opts.name,
            result.space_id or "the default space",
            subscription,
            thumbprint,
        )
        details = {
            "worker_id": worker.get("Id"),
            "space_id": result.space_id,
            "subscription": subscription,
            "thumbprint": thumbprint,
            "name": opts.name,
        }
        if not opts.run:
            home.write_status("registered", **details)
            return EXIT_OK
        running = True
        home.write_status("running", **details)
        for host, port in opts.poll_servers:  # further HA nodes: same subscription, one channel each
            home.add_or_update_trusted_server(
                TrustedServer(result.server_thumbprint, f"https://{host}:{port}", "TentacleActive", subscription)
            )
            extra = CommsChannel(host, port, subscription, thumbprint)
            threading.Thread(
                target=run_forever,
                args=(extra, opts.ping_interval),
                kwargs={"disk_present": home.path.is_dir},
                daemon=True,
                name=f"poll-{host}:{port}",
            ).start()
        log.info("Tentacle running; stop with SIGTERM")
        run_forever(channel, opts.ping_interval, disk_present=home.path.is_dir)
        return EXIT_OK
    except RegistrationError as exc:
        log.error("%s", exc)
        if home is not None:
            with contextlib.suppress(OSError):
                home.write_status("failed", error=redact(str(exc), secret))
        return EXIT_FAILED
    except TentacleStateError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except OSError as exc:  # the home directory cannot be created or written
        log.error("Cannot use the tentacle home directory: %s", exc)
        return EXIT_FAILED
    except _Terminated:
        log.info("Terminated; closing the comms channel" if running else "Terminated before registration finished")
        if home is not None:
            with contextlib.suppress(OSError):
                home.write_status("stopped")
        return EXIT_OK if running else EXIT_TERMINATED
    finally:
        if channel is not None:
            channel.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
        log.removeHandler(handler)
