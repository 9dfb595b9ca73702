"""Fixtures for the OctopusHook tests (the emulator fixtures come from ``octopus_emulator.pytest_plugin``)."""

from __future__ import annotations

import os
import tempfile

# Airflow reads AIRFLOW_HOME when first imported; keep it away from any real installation unless a parent
# conftest has already isolated it.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="octopus-hook-tests-")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
