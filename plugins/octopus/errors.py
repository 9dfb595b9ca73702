"""The package's error types, one per meaning: bad input, a lease held by another run, a foreign record in the way."""

from __future__ import annotations


class SharingError(ValueError):
    """Bad input to a decision (a param, a template, a Variable that is not ours); the message says what to change."""


class LeaseHeldError(Exception):
    """Another run holds the deployment's lease, or a newer run has claimed it (this run is fenced out)."""


class ForeignRecordError(Exception):
    """A record this deployment does not own is in the way (e.g. a foreign machine holding one of our names)."""


class SpaceAccessError(Exception):
    """A space's pools could not be read (e.g. 403): raised by a ``pools_of`` callable of
    :func:`octopus.discovery.plan_fleets`."""
