"""Test isolation: a private AIRFLOW_HOME set before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_home = Path(tempfile.mkdtemp(prefix="octopus-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_home)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home}/airflow.db"
os.environ["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(_home / "logs")
os.environ.pop("AIRFLOW_CONN_OCTOPUS_DEFAULT", None)

pytest_plugins = ["octopus_emulator.pytest_plugin"]
