"""A real browser on the Airflow UI: headless Chromium (Debian's package) driven by Playwright, against the
scheduler suite's ``airflow standalone`` wired to the emulator and the local cloud.

The browser is the distribution's ``/usr/bin/chromium`` (``scripts/setup.d/40-browser.sh`` installs it);
Playwright never downloads one. Where it cannot be installed (no root) the tests skip, saying so.
Screenshots go to each test's ``tmp_path`` and are copied to ``.artifacts/ui/<test>/`` for people to look at.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from octopus.dag_defaults import share_pool_body
from tests.conftest import ROOT
from tests.scheduler.standalone import share_standalone

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, and nothing that phones home (the machine has only loopback; these also keep runs quiet).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / ".artifacts" / "ui"


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(
            f"no browser: {CHROMIUM} is missing and scripts/setup.d/40-browser.sh could not install Debian's "
            "chromium package (it needs root and apt)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts(request, tmp_path) -> Iterator[Path]:
    """Where a test saves its screenshots; copied to ``.artifacts/ui/<test>/`` afterwards, pass or fail."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    yield shots
    target = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(shots, target)


@pytest.fixture
def page(browser, artifacts):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    except BaseException:
        raise
    finally:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(artifacts / "zz-last.png"), full_page=True)
        context.close()


@pytest.fixture(scope="module")
def ui_airflow(browser, emulator_process, tmp_path_factory):
    """``airflow standalone`` as the scheduler suite runs it, plus what the UI tests use.

    The **Test** button is enabled (``[core] test_connection``; Airflow ships it disabled), ``octopus_default``
    is a connection of type ``octopus``, and the share pool exists as the demo creates it.
    """
    with share_standalone(
        emulator_process,
        tmp_path_factory.mktemp("ui-standalone"),
        conn={"conn_type": "octopus"},
        env={"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"},
    ) as airflow:
        airflow.api.call("POST", "pools", share_pool_body(), ok=(200, 201, 409))
        yield airflow
