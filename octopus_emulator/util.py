"""Small helpers shared by the emulator modules: ids, dates, slugs, JSON."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

INT32_MAX = 2147483647

#: canonical collection prefixes, keyed by their lower-case form (ids are case-insensitive [I])
ID_PREFIXES = {
    "spaces": "Spaces",
    "workerpools": "WorkerPools",
    "workers": "Workers",
    "machinepolicies": "MachinePolicies",
    "users": "Users",
}

_ID_RE = re.compile(r"([A-Za-z]+)-(\d+)")
_SLUG_STRIP = re.compile(r"[^a-z0-9]+")


def canon_id(raw: str | None, prefix: str) -> str | None:
    """``workers-42`` -> ``Workers-42`` when the prefix matches (case-insensitively), else None."""
    if not raw:
        return None
    m = _ID_RE.fullmatch(raw.strip())
    if m is None or m.group(1).lower() != prefix.lower():
        return None
    return f"{prefix}-{m.group(2)}"


def is_space_id(segment: str) -> bool:
    m = _ID_RE.fullmatch(segment)
    return m is not None and m.group(1).lower() == "spaces"


def octo_date(dt: datetime | None = None) -> str:
    """``yyyy-MM-ddTHH:mm:ss.fff+00:00`` (the server's format)."""
    dt = (dt or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+00:00"


def slugify(name: str) -> str:
    slug = _SLUG_STRIP.sub("-", name.lower()).strip("-")
    return slug or "item"


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_bool(value: str) -> bool | None:
    v = value.strip().lower()
    if v == "true":
        return True
    if v == "false":
        return False
    return None


def split_csv(value: str | None) -> list[str]:
    if value is None:
        return []
    return [p.strip() for p in value.split(",") if p.strip()]


def uri_key(uri: str | None) -> str | None:
    """Normalised endpoint Uri used to match worker records with connected tentacles."""
    if not uri:
        return None
    key = uri.strip().lower()
    if key.startswith("poll://") and not key.endswith("/"):
        key += "/"
    return key


def thumb_key(thumb: str | None) -> str:
    return (thumb or "").strip().upper()
