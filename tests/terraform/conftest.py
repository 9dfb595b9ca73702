"""Fixtures for the Terraform module and bootstrap-script tests (offline)."""

from __future__ import annotations

import shutil

import pytest
from tf_support import VARIANTS, RunResult, Sandbox, render_templates


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, str]:
    """configure-tentacle.sh rendered by Terraform's templatefile() for every variant in tf_support.VARIANTS."""
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH")
    return render_templates(VARIANTS, tmp_path_factory.mktemp("render"))


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    """A fresh sandbox, for tests that inject faults or run the script more than once."""
    return Sandbox(tmp_path)


@pytest.fixture(scope="session")
def run_once(rendered, tmp_path_factory):
    """run_once(variant) -> RunResult of one fault-free run of that variant, shared by the tests reading it."""
    results: dict[str, RunResult] = {}

    def run(variant: str) -> RunResult:
        if variant not in results:
            results[variant] = Sandbox(tmp_path_factory.mktemp(variant)).run(rendered[variant])
        return results[variant]

    return run
