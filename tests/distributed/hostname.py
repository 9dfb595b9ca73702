"""``[core] hostname_callable`` of the distributed suite's components: each worker "machine" names itself."""

from __future__ import annotations

import os
import socket


def from_env() -> str:
    """``OCTOPUS_TEST_HOSTNAME`` (a loopback address per worker), else the real host name."""
    return os.environ.get("OCTOPUS_TEST_HOSTNAME") or socket.getfqdn()
