"""The comms channel: the emulator's analogue of the polling port 10943 (docs/design.md).

Protocol (TCP, one JSON object per line, UTF-8):

1. the tentacle sends ``{"subscription": "poll://xxxxxxxxxxxxxxxxxxxx/", "thumbprint": "<40 hex>"}``
   (optional extra keys: ``version``, ``os``, ``shell``, ``architecture`` - shown on the worker once healthy);
2. the server answers ``{"ok": true}`` (or ``{"ok": false, "error": "..."}`` and closes);
3. the connection stays open; the tentacle may send ``{"ping": n}`` lines, answered ``{"pong": n}``;
4. connection closed = tentacle gone.

A tentacle may hold several connections; it counts as connected while at least one is open. One emulator may
listen on several ports, one per simulated HA node (``CommsServer.listen``): they share one registry, as the nodes
of an HA cluster share one database, and the registry records through which nodes each tentacle is connected
(a polling Tentacle must poll every node, or tasks queued on the others never reach it). A plain HTTP
request (``POST /handshake``, the probe a real ``register-worker`` makes) is answered ``200`` and closed.
The registry calls ``on_connect(subscription, thumbprint)`` when a (subscription, thumbprint) pair gets its first
connection and ``on_disconnect(...)`` when it loses its last one. Never exposed over the REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

from .util import thumb_key, uri_key

HELLO_TIMEOUT = 600.0  # a tentacle may probe the port long before it says hello
MAX_LINE = 65536
HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"OPTIONS ", b"DELETE ")


class CommsRegistry:
    def __init__(self) -> None:
        self._conns: dict[tuple[str, str], dict[str, Any]] = {}
        self.on_connect: Callable[[str, str], None] = lambda sub, thumb: None
        self.on_disconnect: Callable[[str, str], None] = lambda sub, thumb: None
        self.total_connections = 0

    def add(self, subscription: str, thumbprint: str, info: dict[str, Any], node: str = "node-1") -> None:
        key = (uri_key(subscription) or "", thumb_key(thumbprint))
        entry = self._conns.get(key)
        self.total_connections += 1
        if entry is None:
            self._conns[key] = {"subscription": subscription, "thumbprint": thumbprint, "connections": 1,
                                "since": time.time(), "info": info, "nodes": {node: 1}}
            self.on_connect(subscription, thumbprint)
        else:
            entry["connections"] += 1
            entry["nodes"][node] = entry["nodes"].get(node, 0) + 1
            entry["info"] = info or entry["info"]

    def remove(self, subscription: str, thumbprint: str, node: str = "node-1") -> None:
        key = (uri_key(subscription) or "", thumb_key(thumbprint))
        entry = self._conns.get(key)
        if entry is None:
            return
        entry["connections"] -= 1
        if entry["nodes"].get(node, 0) > 1:
            entry["nodes"][node] -= 1
        else:
            entry["nodes"].pop(node, None)
        if entry["connections"] <= 0:
            del self._conns[key]
            self.on_disconnect(subscription, thumbprint)

    def is_connected(self, subscription: str | None, thumbprint: str | None) -> bool:
        return (uri_key(subscription) or "", thumb_key(thumbprint)) in self._conns

    def connection_info(self, subscription: str | None, thumbprint: str | None) -> dict[str, Any] | None:
        entry = self._conns.get((uri_key(subscription) or "", thumb_key(thumbprint)))
        return entry["info"] if entry else None

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"subscription": e["subscription"], "thumbprint": e["thumbprint"], "connections": e["connections"],
                 "since": e["since"], "info": e["info"], "nodes": sorted(e["nodes"])} for e in self._conns.values()]


class CommsServer:
    """asyncio TCP server for the comms channel; runs on the same loop as the HTTP server."""

    def __init__(self, registry: CommsRegistry, sock: socket.socket, node: str = "node-1") -> None:
        self.registry = registry
        self.sock = sock
        self.node = node
        self.server: asyncio.base_events.Server | None = None
        self._writers: dict[asyncio.StreamWriter, tuple[str, str] | None] = {}

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, sock=self.sock, limit=MAX_LINE)

    @classmethod
    async def listen(cls, registry: CommsRegistry, host: str, port: int, node: str) -> CommsServer:
        """Start a further listener (another HA node) on ``host:port`` (0: a free port) sharing ``registry``."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        server = cls(registry, sock, node)
        await server.start()
        return server

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self._writers):
            writer.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    def drop(self, subscription: str | None = None) -> int:
        """Close the connections of one subscription (all when None), like a network failure."""
        n = 0
        for writer, ident in list(self._writers.items()):
            if ident is not None and (subscription is None or ident[0] == uri_key(subscription)):
                writer.close()
                n += 1
        return n

    async def _send(self, writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        writer.write(json.dumps(obj).encode() + b"\n")
        await writer.drain()

    async def _http(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = 0
        while True:
            line = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
            if not line or line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if length:
            await asyncio.wait_for(reader.readexactly(min(length, MAX_LINE)), HELLO_TIMEOUT)
        ok = first.startswith(b"POST /handshake")
        body = b'{"ok":true}' if ok else b'{"ErrorMessage":"Not found"}'
        status = b"200 OK" if ok else b"404 Not Found"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers[writer] = None
        ident: tuple[str, str] | None = None
        try:
            line = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
            if line.startswith(HTTP_METHODS):
                await self._http(line, reader, writer)
                return
            try:
                hello = json.loads(line)
            except ValueError:
                hello = None
            sub = hello.get("subscription") if isinstance(hello, dict) else None
            thumb = hello.get("thumbprint") if isinstance(hello, dict) else None
            if not isinstance(sub, str) or not sub.lower().startswith("poll://") or len(sub) <= len("poll://"):
                await self._send(writer, {"ok": False, "error": "hello must carry subscription poll://.../"})
                return
            if not isinstance(thumb, str) or not thumb.strip():
                await self._send(writer, {"ok": False, "error": "hello must carry the tentacle thumbprint"})
                return
            info = {k: hello[k] for k in ("version", "os", "shell", "architecture", "name") if k in hello}
            ident = (uri_key(sub) or "", thumb_key(thumb))
            self._writers[writer] = ident
            self.registry.add(sub, thumb, info, self.node)
            await self._send(writer, {"ok": True})
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict) and "ping" in msg:
                    await self._send(writer, {"pong": msg["ping"]})
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError, OSError):
            pass
        finally:
            self._writers.pop(writer, None)
            if ident is not None:
                self.registry.remove(sub, thumb, self.node)
            with contextlib.suppress(Exception):
                writer.close()
