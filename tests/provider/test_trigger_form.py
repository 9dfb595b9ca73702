"""The trigger forms of both DAGs: titles, descriptions, sections, widgets, and the runbooks' conf unchanged."""

from __future__ import annotations

import copy

import pytest
from airflow.sdk.definitions.param import ParamsDict

from octopus import dag_defaults
from octopus.dag_defaults import RETIRE_PARAMS, SHARE_PARAMS
from octopus.sharing import DEFAULT_INSTANCE_COUNT, SUPPORTED_CLOUDS

SECTIONS = ["What to build", "Where to share", "Advanced"]

#: Names and defaults before the form work (users' runbooks pass these in conf), plus the new initial_space.
SHARE_DEFAULTS = {
    "clouds": ["aws", "azure", "gcp"],
    "instance_count": {"aws": 2, "azure": 2, "gcp": 2, "local": 3},
    "worker_pool_name": "{cloud} Worker Pool TF",
    "target_spaces": [],
    "allowed_spaces": [],
    "denied_spaces": [],
    "dry_run": False,
    "prune_stale": True,
    "registration_timeout_minutes": 20,
    "poll_interval_seconds": 30,
    "wait_mode": "reschedule",
    "name_prefix": "octopus-shared",
    "initial_space": "",
    "adopt": [],
    "drain_timeout_minutes": 60,
    "force_drain": False,
    "stale_lease_minutes": 15,
}
RETIRE_DEFAULTS = {
    k: SHARE_DEFAULTS[k]
    for k in (
        "clouds",
        "worker_pool_name",
        "dry_run",
        "name_prefix",
        "drain_timeout_minutes",
        "force_drain",
        "stale_lease_minutes",
        "poll_interval_seconds",
    )
} | {"initial_space": "", "forget_spaces": []}


def widget(schema: dict, value) -> str:
    """The widget Airflow 3.3's trigger form picks for a param (its FieldSelector's rules, in its order)."""
    types = schema.get("type")
    non_null = [t for t in types if t != "null"] if isinstance(types, list) else [types]
    if isinstance(types, list) and len(non_null) > 1 and "enum" not in schema and "examples" not in schema:
        return "multi-type textarea"
    kind = non_null[0] if types else type(value).__name__
    if kind == "boolean":
        return "switch"
    if kind in ("null", "string", "number", "integer") and isinstance(schema.get("enum"), list):
        return "dropdown"
    if kind == "array" and (isinstance(schema.get("examples"), list) or isinstance(schema.get("enum"), list)):
        return "multi-select"
    if kind == "array" and schema.get("items", {}).get("type") in (None, "string"):
        return "lines textarea"
    if kind == "array":
        return "JSON editor"
    if kind == "object":
        return "JSON editor"
    if kind in ("integer", "number"):
        return "number"
    return "text"


def starred(schema: dict) -> bool:
    """The form marks a field required unless its type allows null."""
    types = schema.get("type")
    return bool(types) and (not isinstance(types, list) or "null" not in types)


@pytest.fixture(params=["share", "retire"])
def params(request) -> dict:
    return SHARE_PARAMS if request.param == "share" else RETIRE_PARAMS


class TestEveryParam:
    def test_titled_described_and_in_a_section(self, params):
        for name, param in params.items():
            assert param.schema.get("title"), name
            assert param.description and len(param.description) > 20, name
            assert param.schema.get("section") in SECTIONS, name

    def test_sections_appear_in_reading_order(self):
        order = list(dict.fromkeys(p.schema["section"] for p in SHARE_PARAMS.values()))
        assert order == SECTIONS

    def test_the_dumped_form_carries_titles_and_sections(self):
        # What the API serves to the trigger form.
        schema = SHARE_PARAMS["clouds"].dump()["schema"]
        assert schema["title"] == "Clouds"
        assert schema["section"] == "What to build"
        assert schema["values_display"]["gcp"] == "Google Cloud (GCP)"


class TestSameConfAsBefore:
    def test_share_names_and_defaults(self):
        assert {name: p.value for name, p in SHARE_PARAMS.items()} == SHARE_DEFAULTS

    def test_retire_names_and_defaults(self):
        assert {name: p.value for name, p in RETIRE_PARAMS.items()} == RETIRE_DEFAULTS

    def test_defaults_are_those_of_the_code(self):
        assert SHARE_PARAMS["instance_count"].value == DEFAULT_INSTANCE_COUNT
        assert SHARE_PARAMS["instance_count"].value is not DEFAULT_INSTANCE_COUNT  # a copy: Params may be mutated

    @pytest.mark.parametrize(
        "conf",
        [
            {"clouds": ["aws"], "instance_count": {"aws": 3}, "dry_run": True},  # the README's CLI example
            {"clouds": ["local"], "instance_count": {"local": 2}, "target_spaces": ["Team A", "Spaces-3"]},
            {"target_spaces": None, "initial_space": None},  # what the form sends for emptied optional fields
            {"initial_space": "Team A", "name_prefix": "team-blue"},
            {"wait_mode": "deferrable", "registration_timeout_minutes": 5, "poll_interval_seconds": 2},
        ],
    )
    def test_runbook_conf_still_validates(self, conf):
        merged = ParamsDict(copy.deepcopy(SHARE_PARAMS))  # update() sets the shared Params in place
        merged.update(conf)
        merged.validate()

    @pytest.mark.parametrize(
        "conf",
        [
            {"clouds": "aws"},
            {"clouds": ["aws", "aws"]},
            {"instance_count": {"local": 101}},
            {"name_prefix": "team--x"},
            {"name_prefix": "Team"},
            {"worker_pool_name": None},
            {"prune_stale": None},
        ],
    )
    def test_bad_conf_is_still_refused(self, conf):
        merged = ParamsDict(copy.deepcopy(SHARE_PARAMS))  # update() sets the shared Params in place
        with pytest.raises(Exception, match="Invalid input|not valid|ParamValidationError|does not match"):
            merged.update(conf)
            merged.validate()


class TestWidgets:
    def test_clouds_is_a_multi_select_of_the_four_clouds(self, params):
        schema = params["clouds"].schema
        assert widget(schema, params["clouds"].value) == "multi-select"
        assert schema["examples"] == list(SUPPORTED_CLOUDS) == schema["items"]["enum"]
        assert set(schema["values_display"]) == set(SUPPORTED_CLOUDS)

    def test_each_share_param_s_widget(self):
        widgets = {name: widget(p.schema, p.value) for name, p in SHARE_PARAMS.items()}
        assert widgets == {
            "clouds": "multi-select",
            "instance_count": "JSON editor",  # {cloud: count}, prefilled with every cloud's default
            "name_prefix": "text",
            "dry_run": "switch",
            "worker_pool_name": "text",
            "target_spaces": "lines textarea",  # one space per line (names may contain spaces)
            "allowed_spaces": "lines textarea",
            "denied_spaces": "lines textarea",
            "initial_space": "text",
            "prune_stale": "switch",
            "registration_timeout_minutes": "number",
            "poll_interval_seconds": "number",
            "adopt": "lines textarea",  # one thumbprint per line, from a dry run's summary
            "drain_timeout_minutes": "number",
            "force_drain": "switch",
            "stale_lease_minutes": "number",
            "wait_mode": "dropdown",
        }

    def test_only_fields_that_may_stay_empty_are_unstarred(self):
        unstarred = {name for name, p in SHARE_PARAMS.items() if not starred(p.schema)}
        assert unstarred == {"target_spaces", "allowed_spaces", "denied_spaces", "initial_space", "adopt"}

    def test_wait_mode_labels_cover_its_values(self):
        schema = SHARE_PARAMS["wait_mode"].schema
        assert set(schema["values_display"]) == set(schema["enum"])


class TestSharePool:
    def test_pool_body_for_the_rest_api(self):
        body = dag_defaults.share_pool_body()
        assert body == {
            "name": "octopus_share",
            "slots": dag_defaults.SHARE_POOL_SLOTS,
            "description": dag_defaults.SHARE_POOL_DESCRIPTION,
            "include_deferred": False,
        }

    def test_one_run_never_exceeds_the_pool(self):
        assert 1 <= dag_defaults.SHARE_MAX_ACTIVE_TIS <= dag_defaults.SHARE_POOL_SLOTS
