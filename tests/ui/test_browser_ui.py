"""What a new user does in the Airflow UI, in a real browser: an Octopus connection, then a share run.

1. *Admin → Connections → Add*: type **Octopus Deploy** shows Server URL and a masked API key (login, schema and
   port hidden) and the extras as named, typed fields; **Test** on the saved connection runs
   ``OctopusHook.test_connection`` against the emulator and the toast names the server and its version.
2. *Trigger* of ``share_octopus_workers``: sections, ``local`` picked in the clouds multi-select, 2 workers;
   the run (real scheduler, local cloud) appears in the grid with its ``share_to_space`` instances named by space
   and each drain labelled with what it did.
3. *Trigger* of ``autoscale_octopus_workers``: its form shows the rule's knobs and the access policy.
"""

from __future__ import annotations

import json
import re

import pytest
import requests
from playwright.sync_api import expect

from octopus_emulator.scenario import make_scenario
from tests.dags.harness import LOCAL_POOL
from tests.scheduler.standalone import SHARE_DAG

pytestmark = [pytest.mark.scheduler, pytest.mark.ui]

SPACES = ["Space 001", "Space 002", "Space 003"]
CONN_ID = "octopus_ui"
FIELD_LABELS = [
    "Verify TLS certificate",
    "Timeout (seconds)",
    "Page size",
    "Max requests per minute",
    "Max attempts",
    "Retry budget (seconds)",
]
#: Airflow 3.3.2's connection list posts ``port: Number(null)`` = 0 for a connection without a port, and the API
#: answers 400 "The host or port to test differs from the stored connection" (fixed upstream by apache/airflow
#: #73298, not released yet). Every portless connection type meets it, HTTP included.
PORT_ZERO_BUG = "The host or port to test differs from the stored connection"


def shot(page, artifacts, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def server_version(emulator_process) -> str:
    return requests.get(f"{emulator_process.url}/api", timeout=10).json()["Version"]


def press_test(page, row):
    """Click the row's Test button; return (request body, response status, response JSON)."""
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as caught:
        row.get_by_role("button", name="Test Connection").click()
    response = caught.value
    return json.loads(response.request.post_data or "{}"), response.status, response.json()


def test_octopus_connection_form_and_test_button(page, artifacts, ui_airflow, emulator_process):
    emulator_process.control.reset(None)
    page.goto(f"{ui_airflow.url}/connections", wait_until="networkidle")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("textbox", name="Connection ID").fill(CONN_ID)
    dialog.get_by_role("combobox").fill("Octopus")
    page.get_by_role("option", name="Octopus Deploy").click()

    # The standard fields: server URL and a masked key; nothing an Octopus connection does not use.
    host = dialog.locator("input[name=host]")
    password = dialog.locator("input[name=password]")
    assert host.get_attribute("placeholder") == "https://octopus.example.com"
    assert password.get_attribute("type") == "password"
    for label in ("Server URL", "API key"):
        assert dialog.get_by_text(label, exact=True).is_visible()
    for hidden in ("login", "schema", "port"):
        assert dialog.locator(f"input[name={hidden}]").count() == 0, hidden
    host.fill(emulator_process.url)
    password.fill(emulator_process.api_key)

    # The extras as named, typed fields, each explained.
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for label in FIELD_LABELS:
        assert dialog.get_by_text(label, exact=True).is_visible(), label
    assert dialog.locator("input[name=element_verify]").is_checked()  # TLS verification shows as on
    dialog.locator("input[name=element_timeout]").fill("10")
    dialog.locator("input[name=element_max_requests_per_minute]").fill("180")
    assert dialog.get_by_text("Default 1000.", exact=False).is_visible()
    shot(page, artifacts, "01-connection-form")
    dialog.get_by_role("button", name="Save").click()
    dialog.wait_for(state="hidden")

    stored = ui_airflow.api.call("GET", f"connections/{CONN_ID}")
    assert (stored["conn_type"], stored["host"], stored["password"]) == ("octopus", emulator_process.url, "***")
    extra = json.loads(stored["extra"])
    assert {k: extra[k] for k in ("verify", "timeout", "max_requests_per_minute")} == {
        "verify": True,
        "timeout": 10,
        "max_requests_per_minute": 180,
    }
    assert extra["page_size"] is None  # empty = the hook's default

    row = page.get_by_role("row").filter(has_text=CONN_ID)
    body, status, answer = press_test(page, row)
    if status == 400 and body.get("port") == 0 and PORT_ZERO_BUG in answer.get("detail", ""):
        # Airflow's own bug, before our hook is reached: send what the UI meant (no port) and press again.
        shot(page, artifacts, "02a-airflow-3.3.2-port-zero-bug")
        page.route(
            "**/api/v2/connections/test",
            lambda route: route.continue_(
                post_data=json.dumps({**json.loads(route.request.post_data), "port": None}),
            ),
        )
        body, status, answer = press_test(page, row)
    expected = f"Connected to Octopus Deploy {server_version(emulator_process)} at {emulator_process.url}"
    assert (status, answer) == (200, {"status": True, "message": expected})
    toast = page.locator("[data-scope=toast][data-part=root]").filter(has_text=expected)
    expect(toast).to_be_in_viewport(ratio=1)  # slid in completely (for the screenshot)
    assert "Connection" in toast.inner_text()  # the success toast's title, with the hook's message under it
    shot(page, artifacts, "02-test-success")
    # It went through the key: users/me was answered 200 to this test.
    assert any(
        (r["method"], r["path"], r["status"]) == ("GET", "/api/users/me", 200)
        for r in emulator_process.control.requests()
    )


def test_trigger_form_runs_the_local_fleet(page, artifacts, ui_airflow, emulator_process):
    control = emulator_process.control
    control.reset(make_scenario(len(SPACES), [LOCAL_POOL]))
    control.clear_requests()
    page.goto(f"{ui_airflow.url}/dags/{SHARE_DAG}", wait_until="networkidle")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    for section in ("What to build", "Where to share", "Advanced"):
        assert dialog.get_by_role("button", name=section, exact=True).is_visible(), section
    dialog.get_by_role("button", name="Where to share", exact=True).click()
    assert dialog.get_by_text("Initial space", exact=True).is_visible()
    shot(page, artifacts, "03-trigger-where-to-share")
    dialog.get_by_role("button", name="What to build", exact=True).click()

    # Clouds: a multi-select of the four clouds. Drop the defaults, pick Local.
    clouds = dialog.locator("#element_clouds")
    for label in ("AWS", "Azure", "Google Cloud (GCP)"):
        clouds.get_by_label(f"Remove {label}").click()
    clouds.get_by_role("combobox").click()
    options = page.get_by_role("option").all_inner_texts()
    assert [o.split(" (")[0] for o in options] == ["AWS", "Azure", "Google Cloud", "Local"]
    page.get_by_role("option", name="Local", exact=False).click()
    dialog.get_by_role("heading").first.click()  # close the menu (Escape would close the dialog)
    assert clouds.get_by_label("Remove Local (simulated VMs on the Airflow worker: tests and demos)").count() == 1

    # Workers per cloud: the JSON editor lists every cloud's count; change local's 3 into 2, as a person would.
    editor = dialog.locator(".monaco-editor").first
    local_line = editor.locator(".view-line").filter(has_text='"local"')
    local_line.locator("span").filter(has_text="3").last.dblclick()
    page.keyboard.type("2")
    expect(local_line).to_have_text(re.compile(r'"local":\s*2$'))
    dialog.get_by_role("heading").first.click()  # blur the editor
    shot(page, artifacts, "04-trigger-what-to-build")

    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/dags/{SHARE_DAG}/dagRuns")
    ) as caught:
        dialog.get_by_role("button", name="Trigger", exact=True).click()
    assert caught.value.status == 200, caught.value.text()
    run = caught.value.json()
    run_id = run["dag_run_id"]
    assert run["conf"]["clouds"] == ["local"]
    assert run["conf"]["instance_count"]["local"] == 2

    def finished():
        state = ui_airflow.api.dag_run(SHARE_DAG, run_id)["state"]
        return state if state in ("success", "failed") else None

    state = ui_airflow.wait(finished, timeout=300, interval=1, what=f"run {run_id} to finish")
    tis = ui_airflow.api.task_instances(SHARE_DAG, run_id)
    shares = {ti["rendered_map_index"]: ti["state"] for ti in tis if ti["task_id"] == "share_to_space"}
    assert state == "success", sorted((ti["task_id"], ti["rendered_map_index"], ti["state"]) for ti in tis)
    assert shares == dict.fromkeys(SPACES, "success")

    # The grid: the run, and share_to_space's mapped instances under the spaces' names.
    page.goto(f"{ui_airflow.url}/dags/{SHARE_DAG}/runs/{run_id}", wait_until="networkidle")
    page.get_by_text(run_id).first.wait_for()
    shot(page, artifacts, "05-grid-run")
    page.goto(f"{ui_airflow.url}/dags/{SHARE_DAG}/runs/{run_id}/tasks/share_to_space/mapped", wait_until="networkidle")
    for space in SPACES:
        page.get_by_role("link", name=space, exact=True).first.wait_for()
    shot(page, artifacts, "06-share-to-space-by-space")

    # The drains say what they did: nothing leaves a first build, and no instance is outdated.
    labels = {
        ti["task_id"]: ti["rendered_map_index"] for ti in tis if ti["task_id"] in ("drain_removed", "drain_outdated")
    }
    assert labels == {"drain_removed": "local: nothing leaves", "drain_outdated": "local: nothing outdated"}, labels
    page.goto(f"{ui_airflow.url}/dags/{SHARE_DAG}/runs/{run_id}/tasks/drain_removed/mapped", wait_until="networkidle")
    page.get_by_role("link", name="local: nothing leaves", exact=True).first.wait_for()
    shot(page, artifacts, "07-drain-label")


def test_the_scaler_trigger_form_shows_its_knobs_and_the_access_policy(page, artifacts, ui_airflow):
    page.goto(f"{ui_airflow.url}/dags/autoscale_octopus_workers", wait_until="networkidle")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    for section in ("What to scale", "How to scale", "Where demand counts"):
        assert dialog.get_by_role("button", name=section, exact=True).is_visible(), section
    dialog.get_by_role("button", name="Where demand counts", exact=True).click()
    for label in ("Allowed spaces", "Denied spaces"):
        assert dialog.get_by_text(label, exact=True).first.is_visible(), label
    shot(page, artifacts, "08-autoscale-trigger-form")
