"""The share and the plan's writes on the async client, for the share trigger: the same operations as the worker's.

``share_space(octopus, space, fleets, *, prune, dry_run, parallelism=DEFAULT_PARALLELISM)`` and
``execute_actions(octopus, space_id, actions, clouds, parallelism=DEFAULT_PARALLELISM, *, tolerate_refusal=None)``
take an :class:`~octopus.aio.AsyncOctopusClient` and run :func:`octopus.operations.share_steps` and
:func:`octopus.operations.execute_steps` (operations over the API core, written once; the worker's
:func:`octopus.operations.share_space` and :func:`octopus.operations.execute_actions` run the same ones on the
hook) on it: a space's writes run as coroutines, at most ``parallelism`` at once.
"""

from __future__ import annotations

from octopus.aio import driven, gather_limited
from octopus.operations import DEFAULT_PARALLELISM, execute_steps, share_steps

__all__ = ["DEFAULT_PARALLELISM", "execute_actions", "gather_limited", "share_space"]

#: As :func:`octopus.operations.share_space`, awaited on an ``AsyncOctopusClient``.
share_space = driven(share_steps, "share_space")
#: As :func:`octopus.operations.execute_actions`, awaited on an ``AsyncOctopusClient``.
execute_actions = driven(execute_steps, "execute_actions")
