"""TEMPORARY minimal Octopus + comms server for the tentacle tests, until octopus_emulator's server exists."""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FakeOctopus:
    def __init__(self, api_key: str, prefix: str = "", take: int = 2) -> None:
        self.api_key, self.prefix, self.take = api_key, prefix, take
        self.log: list[str] = []
        self.connected: dict[str, int] = {}
        self.connections_total = 0
        self.comms_sockets: list = []
        self.spaces = [
            {"Id": "Spaces-1", "Name": "Default", "IsDefault": True},
            {"Id": "Spaces-2", "Name": " Second ", "IsDefault": False},
        ]
        self.pools = {
            "Spaces-1": [{"Id": f"WorkerPools-{i}", "Name": f"Pool {i}", "Slug": f"pool-{i}"} for i in range(1, 6)],
            "Spaces-2": [{"Id": "WorkerPools-9", "Name": "Airflow Pool", "Slug": "airflow-pool"}],
        }
        self.policies = {
            s["Id"]: [
                {"Id": f"MachinePolicies-{n}{s['Id'][-1]}", "Name": name}
                for n, name in enumerate(["Default Machine Policy", "Fast", "Slow"], 1)
            ]
            for s in self.spaces
        }
        self.workers: dict[str, dict] = {}
        self.next_id = 1
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                parts = urlsplit(self.path)
                path = parts.path
                fake.log.append(f"{method} {path}" + (f"?{parts.query}" if parts.query else ""))
                if fake.prefix:
                    if not path.startswith(fake.prefix + "/"):
                        return self._send(404, {"ErrorMessage": "not under prefix"})
                    path = path[len(fake.prefix) :]
                if self.headers.get("X-Octopus-ApiKey") != fake.api_key:
                    return self._send(401, {"ErrorMessage": "You must be logged in to perform this action."})
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                body = None
                if method in ("POST", "PUT"):
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    status, out = fake.route(method, path, q, body)
                self._send(status, out)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True

        class Comms(socketserver.StreamRequestHandler):
            def handle(self):
                hello = self.rfile.readline()
                if not hello:
                    return
                sub = json.loads(hello)["subscription"]
                self.wfile.write(b'{"ok": true}\n')
                with fake.lock:
                    fake.connected[sub] = fake.connected.get(sub, 0) + 1
                    fake.connections_total += 1
                    fake.comms_sockets.append(self.connection)
                try:
                    for line in self.rfile:
                        ping = json.loads(line).get("ping")
                        self.wfile.write(json.dumps({"pong": ping}).encode() + b"\n")
                except OSError:
                    pass
                finally:
                    with fake.lock:
                        fake.connected[sub] -= 1

        class ThreadingTCP(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.comms = ThreadingTCP(("127.0.0.1", 0), Comms)
        for srv in (self.http, self.comms):
            threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}{self.prefix}"

    @property
    def comms_port(self) -> int:
        return self.comms.server_address[1]

    def close(self) -> None:
        self.http.shutdown()
        self.comms.shutdown()
        self.comms.server_close()
        self.http.server_close()

    def drop_comms(self) -> None:
        """Close every comms connection from the server side (like an emulator restart)."""
        import socket

        with self.lock:
            socks, self.comms_sockets = self.comms_sockets, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def health(self, worker: dict) -> str:
        return "Healthy" if self.connected.get(worker["Endpoint"]["Uri"], 0) > 0 else "Unavailable"

    def page(self, items, path, q):
        skip, take = int(q.get("skip", 0)), int(q.get("take", self.take))
        links = {"Self": path}
        if skip + take < len(items):
            extra = "".join(f"&{k}={v}" for k, v in q.items() if k not in ("skip", "take"))
            links["Page.Next"] = f"{path}?skip={skip + take}&take={take}{extra}"
        return {"ItemType": "X", "TotalResults": len(items), "Items": items[skip : skip + take], "Links": links}

    def route(self, method, path, q, body):
        seg = path.strip("/").split("/")
        if path == "/api":
            return 200, {
                "Application": "Octopus Deploy",
                "Version": "2025.2.1",
                "ApiVersion": "3.0.0",
                "Links": {
                    "Spaces": "/api/spaces{/id}{?skip,ids,take,partialName}",
                    "SpaceHome": "/api/{spaceId}",
                    "CurrentUser": "/api/users/me",
                    "CertificateConfiguration": "/api/configuration/certificates{/id}{?skip,take}",
                },
            }
        if path == "/api/users/me":
            return 200, {"Id": "Users-1", "Links": {"Spaces": "/api/users/Users-1/spaces"}}
        if path == "/api/users/Users-1/spaces":
            return 200, self.spaces
        if path == "/api/configuration/certificates/certificate-global":
            return 200, {"Thumbprint": "F" * 40}
        sid = seg[1] if len(seg) > 1 else ""
        if sid not in self.pools:
            return 404, {"ErrorMessage": f"The requested space {sid} does not exist"}
        if len(seg) == 2:
            return 200, {
                "Id": sid,
                "Links": {
                    "Workers": f"/api/{sid}/workers{{/id}}{{?skip,take,name,ids}}",
                    "WorkerPools": f"/api/{sid}/workerpools{{/id}}{{?skip,take,ids}}",
                    "MachinePolicies": f"/api/{sid}/machinepolicies{{/id}}{{?skip,take}}",
                },
            }
        coll = seg[2]
        if coll == "workerpools":
            items = self.pools[sid]
            if "ids" in q:
                items = [p for p in items if p["Id"] == q["ids"]]
            return 200, self.page(items, path, q)
        if coll == "machinepolicies":
            return 200, self.page(self.policies[sid], path, q)
        if coll == "workers":
            if method == "GET" and len(seg) == 3:
                items = [dict(w, HealthStatus=self.health(w)) for w in self.workers.values() if w["SpaceId"] == sid]
                if "name" in q:
                    items = [w for w in items if w["Name"].lower() == q["name"].lower()]
                return 200, self.page(items, path, q)
            if method == "POST":
                wid = f"Workers-{self.next_id}"
                self.next_id += 1
                pol = body.get("MachinePolicyId") or self.policies[sid][0]["Id"]
                w = dict(body, Id=wid, SpaceId=sid, MachinePolicyId=pol)
                w["Links"] = {"Self": f"/api/{sid}/workers/{wid}"}
                self.workers[wid] = w
                return 201, w
            if method == "PUT" and len(seg) == 4:
                self.workers[seg[3]] = dict(body)
                return 200, body
        return 404, {"ErrorMessage": "The resource you requested was not found."}
