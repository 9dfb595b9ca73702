"""Octopus Deploy integration for Airflow: hook, errors, pacing, and the worker-sharing logic.

Import what you need from the submodules (``octopus.hooks.OctopusHook``, ``octopus.exceptions``); this package
module stays empty so that importing a light submodule does not pull in Airflow.
"""
