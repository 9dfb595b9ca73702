"""Names and identities: the supported clouds, pool names, the deployment prefix, a record's identity."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from typing import Any

from octopus import settings
from octopus.errors import SharingError

SUPPORTED_CLOUDS: dict[str, str] = settings.CLOUDS
DEFAULT_POOL_NAME_TEMPLATE: str = settings.default("worker_pool_name")
DEFAULT_NAME_PREFIX: str = settings.default("name_prefix")
DEFAULT_INSTANCE_COUNT: dict[str, int] = settings.default("instance_count")
#: The Asset alias both DAGs emit through: octopus://<server>/shared-workers/<prefix>[/retired].
ASSET_ALIAS = "octopus-shared-workers"
POLLING = "TentacleActive"
STALE_HEALTH = frozenset({"Unavailable"})
# Lower-case letters, digits and single hyphens; no cloud name as a hyphen-separated segment (see validate_prefix).
NAME_PREFIX_PATTERN = re.compile(settings.setting("name_prefix").bounds["pattern"])
NAME_PREFIX_MAX: int = settings.setting("name_prefix").bounds["maxLength"]


def pool_name(cloud: str, template: str = DEFAULT_POOL_NAME_TEMPLATE) -> str:
    """The worker pool name for ``cloud`` from a template such as ``"{cloud} Worker Pool TF"``."""
    if cloud not in SUPPORTED_CLOUDS:
        raise SharingError(f"Unknown cloud {cloud!r}; supported: {', '.join(SUPPORTED_CLOUDS)}")
    try:
        fields = [field for _, field, spec, conv in string.Formatter().parse(template) if field is not None]
        if any(f != "cloud" for f in fields) or any(
            spec or conv for _, f, spec, conv in string.Formatter().parse(template) if f is not None
        ):
            raise ValueError(f"only a plain {{cloud}} field is allowed, found {fields}")
        name = template.format(cloud=SUPPORTED_CLOUDS[cloud])
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise SharingError(
            f"worker_pool_name template {template!r} is invalid ({exc!r}); "
            "use {cloud} as the only placeholder, e.g. '{cloud} Worker Pool TF'"
        ) from None
    if not name.strip():
        raise SharingError(f"worker_pool_name template {template!r} gives an empty pool name for {cloud!r}")
    return name.strip()


def pool_names(template: str, clouds: Iterable[str] = SUPPORTED_CLOUDS) -> dict[str, str]:
    """Pool name per cloud; refuses a template that gives two clouds one pool (Octopus compares names ignoring case).

    Every supported cloud is checked, not only the selected ones: a run of one cloud must not pick a pool that
    another cloud's deployment of the same template also fills.
    """
    names = {cloud: pool_name(cloud, template) for cloud in SUPPORTED_CLOUDS}
    by_name: dict[str, list[str]] = {}
    for cloud, name in names.items():
        by_name.setdefault(name.casefold(), []).append(cloud)
    clashes = [f"{names[c[0]]!r} for {', '.join(c)}" for c in by_name.values() if len(c) > 1]
    if clashes:
        raise SharingError(
            f"worker_pool_name template {template!r} gives several clouds the same pool ({'; '.join(clashes)}): "
            "put {cloud} in it exactly once and outside double braces, e.g. '{cloud} Worker Pool TF'"
        )
    return {cloud: names[cloud] for cloud in clouds}


def validate_prefix(prefix: str) -> str:
    """The ``name_prefix`` param, checked so that no deployment's worker names can match another's.

    Worker names are ``<prefix>-<cloud>-<instance>``. A prefix holds no cloud name as a hyphen-separated segment,
    so the first cloud segment of a name ends its prefix: ``team`` and ``team-aws`` (rejected) can never both
    claim ``team-aws-…``.
    """
    if not isinstance(prefix, str) or not NAME_PREFIX_PATTERN.fullmatch(prefix) or len(prefix) > NAME_PREFIX_MAX:
        raise SharingError(
            f"name_prefix {prefix!r} is invalid: use 1-{NAME_PREFIX_MAX} lower-case letters, digits and single "
            "hyphens, starting with a letter (e.g. 'octopus-shared')"
        )
    clouds = [segment for segment in prefix.split("-") if segment in SUPPORTED_CLOUDS]
    if clouds:
        raise SharingError(
            f"name_prefix {prefix!r} contains the cloud name {clouds[0]!r} as a segment: worker names "
            f"'<prefix>-<cloud>-…' would then be ambiguous between deployments. Choose a prefix without "
            f"{', '.join(repr(c) for c in SUPPORTED_CLOUDS)} segments"
        )
    return prefix


def fleet_name_prefix(prefix: str, cloud: str) -> str:
    """What one deployment's module names its instances with."""
    return f"{prefix}-{cloud}"


def same_name(a: str | None, b: str | None) -> bool:
    """Octopus compares names trimmed and case-insensitively."""
    return (a or "").strip().casefold() == (b or "").strip().casefold()


def thumbprint_of(worker: Mapping[str, Any]) -> str:
    endpoint = worker.get("Endpoint") or {}
    return (endpoint.get("Thumbprint") or worker.get("Thumbprint") or "").upper()


def is_polling(worker: Mapping[str, Any]) -> bool:
    return (worker.get("Endpoint") or {}).get("CommunicationStyle") == POLLING


def record_key(record: Mapping[str, Any]) -> str:
    """A record's identity: the thumbprint of its polling endpoint ("" for any other style, never ours).

    Only the instance holding that certificate can serve a polling record with this thumbprint, so a record
    carrying one of our sealed thumbprints is ours whatever its name (a space admin may rename it).
    """
    if not is_polling(record):
        return ""
    return thumbprint_of(record)
