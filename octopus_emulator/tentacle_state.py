"""The simulated Tentacle's local disk: its certificate, its trusted-server entries and a status file.

Everything lives in one home directory (``--home``). Like a real Tentacle instance, the certificate is created
once and kept, and the trusted-server entry for a server keeps its polling subscription id across
re-registrations; delete the directory and the next start is a brand-new machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
import string
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "tentacle.config.json"
CERTIFICATE_FILE = "tentacle.pem"
STATUS_FILE = "tentacle.status.json"
LOCK_FILE = ".tentacle.lock"

_SUBSCRIPTION_ALPHABET = string.ascii_lowercase + string.digits


def new_subscription_id() -> str:
    """A polling subscription id like Tentacle's: ``poll://`` + 20 lowercase alphanumerics + ``/``."""
    return "poll://" + "".join(secrets.choice(_SUBSCRIPTION_ALPHABET) for _ in range(20)) + "/"


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class TentacleStateError(ValueError):
    """The home directory holds something unusable (the message names the file)."""


@dataclass(frozen=True)
class TrustedServer:
    """A trusted Octopus Server entry, as in Tentacle's ``TrustedOctopusServers``."""

    thumbprint: str
    address: str
    communication_style: str
    subscription_id: str

    def to_json(self) -> dict[str, str]:
        return {
            "Thumbprint": self.thumbprint,
            "Address": self.address,
            "CommunicationStyle": self.communication_style,
            "SubscriptionId": self.subscription_id,
        }


class TentacleHome:
    """A Tentacle instance's home directory (created on first use)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()

    # -- locking and raw config --
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise read-modify-write of the home across processes sharing it."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK_FILE, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_config(self) -> dict[str, Any]:
        path = self.path / CONFIG_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise TentacleStateError(
                f"The Tentacle configuration {path} is unreadable ({exc}); delete it to start over."
            ) from exc
        if not isinstance(data, dict):
            raise TentacleStateError(
                f"The Tentacle configuration {path} is not a JSON object; delete it to start over."
            )
        return data

    def _write_config(self, data: dict[str, Any]) -> None:
        _atomic_write(self.path / CONFIG_FILE, (json.dumps(data, indent=2) + "\n").encode())

    # -- certificate --
    def ensure_certificate(self) -> str:
        """Return the Tentacle certificate's thumbprint, generating the certificate on first use.

        Like ``Tentacle new-certificate``: a self-signed RSA certificate for ``CN=Octopus Tentacle``; the
        thumbprint is the upper-case hex SHA-1 of its DER encoding (40 characters).
        """
        with self.locked():
            config = self._read_config()
            cert_path = self.path / CERTIFICATE_FILE
            thumbprint = config.get("TentacleCertificateThumbprint")
            if thumbprint and cert_path.exists():
                return str(thumbprint)
            pem, thumbprint = _generate_certificate()
            _atomic_write(cert_path, pem, mode=0o600)
            config["TentacleCertificateThumbprint"] = thumbprint
            self._write_config(config)
            return thumbprint

    # -- trusted servers --
    def trusted_servers(self) -> list[TrustedServer]:
        """All trusted-server entries."""
        entries = self._read_config().get("TrustedOctopusServers") or []
        return [
            TrustedServer(
                thumbprint=e.get("Thumbprint", ""),
                address=e.get("Address", ""),
                communication_style=e.get("CommunicationStyle", ""),
                subscription_id=e.get("SubscriptionId", ""),
            )
            for e in entries
            if isinstance(e, dict)
        ]

    def find_trusted_server(self, address: str, communication_style: str) -> TrustedServer | None:
        """The entry for this server address and style (Tentacle reuses its subscription id)."""
        for entry in self.trusted_servers():
            if entry.address == address and entry.communication_style == communication_style:
                return entry
        return None

    def add_or_update_trusted_server(self, server: TrustedServer) -> None:
        """Store ``server``, replacing an entry with the same address and style (updated in place)."""
        with self.locked():
            config = self._read_config()
            entries = [e for e in config.get("TrustedOctopusServers") or [] if isinstance(e, dict)]
            for i, e in enumerate(entries):
                if (e.get("Address"), e.get("CommunicationStyle")) == (
                    server.address,
                    server.communication_style,
                ):
                    entries[i] = server.to_json()
                    break
            else:
                entries.append(server.to_json())
            config["TrustedOctopusServers"] = entries
            self._write_config(config)

    # -- status --
    def write_status(self, state: str, **details: Any) -> None:
        """Record the simulator's lifecycle state (booting, registering, running, stopped, failed)."""
        self.path.mkdir(parents=True, exist_ok=True)
        body = {
            "state": state,
            "pid": os.getpid(),
            "at": dt.datetime.now(dt.timezone.utc).isoformat(),
            **details,
        }
        _atomic_write(self.path / STATUS_FILE, (json.dumps(body) + "\n").encode())

    def read_status(self) -> dict[str, Any] | None:
        """The last recorded status, or None."""
        try:
            return json.loads((self.path / STATUS_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None


def _generate_certificate() -> tuple[bytes, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Octopus Tentacle")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365 * 100))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    thumbprint = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, thumbprint
