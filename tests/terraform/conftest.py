"""Fixtures for the Terraform module and bootstrap-script tests (offline)."""

from __future__ import annotations

import shutil

import pytest
from tf_support import VARIANTS, Sandbox, render_templates


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, str]:
    """configure-tentacle.sh rendered by Terraform's templatefile() for every variant in tf_support.VARIANTS."""
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH")
    return render_templates(VARIANTS, tmp_path_factory.mktemp("render"))


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)
