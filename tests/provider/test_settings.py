"""One settings module (issue 18, deliverable 3): every default declared once, and everything reads from it.

* the registry declares each setting once, and no default of it is restated as a literal elsewhere in the package
  (an AST scan of ``plugins/octopus`` and ``dags``; the copies not yet switched are an explicit list to shrink);
* the trigger forms and the connection form are what they were before the registry (a capture of the old
  ``dag_defaults.py`` / ``provider_info.py`` output, ``forms_before_settings.json``);
* the ``[octopus]`` options, connection extras and environment variables are read through it, with its defaults
  and bounds; every ``OCTOPUS_*`` variable the package or its scripts read is declared, with the scripts' defaults;
* ``docs/settings.md`` is the registry's table.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Param

from octopus import dag_defaults, provider_info, settings
from octopus.settings import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "octopus"
SCANNED = sorted(PACKAGE.glob("*.py")) + sorted((ROOT / "dags").glob("*.py"))
BEFORE = json.loads((Path(__file__).with_name("forms_before_settings.json")).read_text())

# ------------------------------------------------------------------------------------- the literal-copy scanner


def _key(value: Any) -> Any:
    """Values compared across types: 30 == 30.0; containers by their JSON."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        try:
            return json.dumps(value, sort_keys=True)
        except TypeError:
            return None
    return None


#: Name parts too general to tie a number to a setting.
_GENERIC = frozenset({"default", "defaults", "max", "min", "seconds", "minutes", "at", "per", "s", "self", "of"})


def _tokens(*names: str) -> frozenset[str]:
    parts = (re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower().split("_") for name in names if name)
    return frozenset(p for part in parts for p in part if p) - _GENERIC


def watched() -> dict[Any, list[str]]:
    """The defaults a copy of which would be a second declaration, by value, with the settings they are the
    default of: numbers > 2 (in minutes also as seconds), strings that are not a plain word (``octopus_default``,
    ``{cloud} Worker Pool TF``), non-empty lists and dicts. Booleans, None, 0, 1, 2, empty values and plain words
    (``worker``, ``local``, ``reschedule``: the package compares with them everywhere) are too common to tell a
    copy from a coincidence."""
    found: dict[Any, list[str]] = {}
    for s in REGISTRY.values():
        d = s.default
        values = [d]
        if s.unit == "minutes" and isinstance(d, (int, float)) and not isinstance(d, bool):
            values.append(d * 60)
        for value in values:
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, (int, float)) and abs(value) <= 2:
                continue
            if isinstance(value, str) and (not value or value.isalpha()):
                continue
            if isinstance(value, (list, dict)) and not value:
                continue
            found.setdefault(_key(value), []).append(s.name)
    return found


def _fold(node: ast.AST) -> Any:
    """The value of a constant expression (``20 * 60``, ``-1``, ``{"aws": 2}``); raises ValueError otherwise."""
    if isinstance(node, ast.BinOp):
        left, right = _fold(node.left), _fold(node.right)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            raise ValueError
        ops = {ast.Mult: lambda a, b: a * b, ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b}
        if type(node.op) not in ops:
            raise ValueError
        return ops[type(node.op)](left, right)
    return ast.literal_eval(node)


def _target_names(stmt: ast.Assign | ast.AnnAssign) -> tuple[str, ...]:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    return tuple(
        t.id if isinstance(t, ast.Name) else t.attr for t in targets if isinstance(t, (ast.Name, ast.Attribute))
    )


class _Finder(ast.NodeVisitor):
    """Declaration sites: module- and class-level assignments, parameter defaults and keyword arguments of calls
    (``timedelta(seconds=30)``), with the names they are declared under (target, dict key, parameter, keyword).

    A number there is a copy when it equals a setting's default and its names share a word with the setting's
    (``registration_timeout=20 * 60``, ``_DEFAULTS = {"timeout": 30.0}``, ``DEFAULT_SPACES_AT_ONCE = 16``): the
    same number under an unrelated name is a coincidence. A watched string (``"octopus_default"``) or container
    is a copy anywhere but in a docstring."""

    def __init__(self, watch: dict[Any, list[str]]) -> None:
        self.watch = watch
        self.hits: list[tuple[int, Any]] = []
        self.docstrings: set[int] = set()

    def _is_copy(self, value: Any, names: tuple[str, ...]) -> bool:
        owners = self.watch.get(_key(value))
        if not owners:
            return False
        if not isinstance(value, (int, float)):
            return True
        here = _tokens(*names)
        return any(here & _tokens(owner) for owner in owners)

    def _value(self, node: ast.AST | None, names: tuple[str, ...]) -> None:
        if node is None:
            return
        try:
            value = _fold(node)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            value = _Finder  # not a constant
        if value is not _Finder and self._is_copy(value, names):
            self.hits.append((node.lineno, value))
            return
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            for element in node.elts:
                self._value(element, names)
        elif isinstance(node, ast.Dict):
            for key, element in zip(node.keys, node.values, strict=True):
                label = key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else ""
                self._value(element, (*names, label))
        elif isinstance(node, ast.Call):
            for arg in node.args:
                self._value(arg, names)
            for keyword in node.keywords:
                self._value(keyword.value, (*names, keyword.arg or ""))

    def _note_docstring(self, node: ast.AST) -> None:
        body = getattr(node, "body", None)
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            self.docstrings.add(id(body[0].value))

    def _assignments(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                self._value(stmt.value, _target_names(stmt))

    def visit_Module(self, node: ast.Module) -> None:
        self._note_docstring(node)
        self._assignments(node.body)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._note_docstring(node)
        self._assignments(node.body)
        self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._note_docstring(node)
        positional = [*node.args.posonlyargs, *node.args.args]
        for arg, default in zip(
            positional[len(positional) - len(node.args.defaults) :], node.args.defaults, strict=True
        ):
            self._value(default, (arg.arg,))
        for arg, default in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True):
            self._value(default, (arg.arg,))
        self.generic_visit(node)

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Call(self, node: ast.Call) -> None:
        for keyword in node.keywords:
            self._value(keyword.value, (keyword.arg or "",))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and id(node) not in self.docstrings and self._is_copy(node.value, ()):
            self.hits.append((node.lineno, node.value))


def scan(source: str, watch: dict[Any, list[str]] | None = None) -> list[tuple[int, Any]]:
    finder = _Finder(watched() if watch is None else watch)
    finder.visit(ast.parse(source))
    unique = {(line, _key(value)): (line, value) for line, value in finder.hits}
    return sorted(unique.values(), key=lambda hit: (hit[0], repr(hit[1])))


def literal_copies() -> Iterator[tuple[str, Any, int]]:
    """(path, value, line) of every literal copy of a setting's default outside ``settings.py``."""
    for path in SCANNED:
        if path.name == "settings.py":
            continue
        for line, value in scan(path.read_text()):
            yield str(path.relative_to(ROOT)), value, line


#: Copies still to switch to ``octopus.settings`` (files other helpers were rewriting while the registry was
#: built): path -> {value: where and what to read instead}. Shrink it as they switch; an entry that no longer
#: matches fails the test, so the list stays exact.
PENDING: dict[str, dict[Any, str]] = {}

#: Literals equal to a default by coincidence: another meaning, not a copy. Keep reasons specific.
UNRELATED: dict[str, dict[Any, str]] = {
    "plugins/octopus/ledger.py": {
        3600.0: "CLAIM_TIMEOUT_SECONDS = 60 * 60: how long a bakery claim is honoured, not a drain timeout",
        30.0: "CHOOSING_WAIT_SECONDS = 30.0: the bakery's doorway wait, not a retry wait",
    },
    "plugins/octopus/scaler.py": {
        30.0: "max_retry_seconds=30: a scaler tick's own short retry budget, not the 30 s timeout/retry_max_wait",
    },
}


def _matches(path: str, value: Any, table: dict[str, dict[Any, str]]) -> bool:
    return _key(value) in {_key(v) for v in table.get(path, {})}


class TestDeclaredOnce:
    def test_names_and_environment_variables_are_unique(self):
        names = [s.name for s in settings._SETTINGS]
        assert len(names) == len(set(names))
        variables = [s.env_var for s in REGISTRY.values() if s.env_var]
        assert len(variables) == len(set(variables))
        for s in REGISTRY.values():
            assert set(s.where) <= set(settings.WHERE), s.name
            assert s.help.strip() and "\n" not in s.help, s.name
            assert (settings.ENV in s.where) == bool(s.env_var), s.name

    def test_the_scanner_finds_a_restated_default(self):
        # Proof that the scan below can fail: the copies it must see, and the look-alikes it must not.
        source = '''
"""octopus_default in a docstring is prose."""
from datetime import timedelta
TIMEOUT = 30.0
LIMITS = {"page_size": 1000, "burst": 1000}
RETRY = timedelta(minutes=10, seconds=30)

class Sensor:
    """octopus_default"""
    conn = "octopus_default"

    def __init__(self, registration_timeout=20 * 60, count=5 - 3, burst=30):
        self.hook = Hook(conn_id=self.conn, parallelism=16, pool_size=16)
        spaces = spaces[:20]
        message = f"waited {30} s"
'''
        hits = scan(source)
        assert hits == [
            (4, 30.0),  # TIMEOUT: the timeout extra
            (5, 1000),  # "page_size": the page_size extra (not "burst")
            (6, 10),  # RETRY ... minutes=10: task_max_retry_delay_minutes
            (6, 30),  # RETRY ... seconds=30: task_retry_delay_seconds
            (10, "octopus_default"),  # the conn id, not in the docstring above it
            (12, 1200),  # registration_timeout_minutes in seconds (not burst=30)
            (13, 16),  # parallelism: discovery_parallelism (not pool_size)
        ]

    def test_no_default_is_restated_in_the_package(self):
        copies = [(p, v, line) for p, v, line in literal_copies() if not _matches(p, v, UNRELATED)]
        unexpected = [f"{p}:{line}: {v!r}" for p, v, line in copies if not _matches(p, v, PENDING)]
        assert not unexpected, (
            "defaults declared in octopus/settings.py restated as literals; read them from octopus.settings "
            "(settings.default(name), settings.seconds(name), a reader) instead:\n  " + "\n  ".join(unexpected)
        )

    def test_the_pending_list_is_exact(self):
        found = {(p, _key(v)) for p, v, _ in literal_copies()}
        stale = [f"{p}: {v!r}" for p, values in PENDING.items() for v in values if (p, _key(v)) not in found]
        assert not stale, "switched to octopus.settings: remove from PENDING in this test:\n  " + "\n  ".join(stale)
        stale = [f"{p}: {v!r}" for p, values in UNRELATED.items() for v in values if (p, _key(v)) not in found]
        assert not stale, "no longer in the file: remove from UNRELATED:\n  " + "\n  ".join(stale)

    def test_the_files_this_change_owns_hold_no_copy(self):
        owned = {"plugins/octopus/dag_defaults.py", "plugins/octopus/provider_info.py", "plugins/octopus/templating.py"}
        assert not [c for c in literal_copies() if c[0] in owned]


# -------------------------------------------------------------------------------------- the forms, unchanged


def _dumps(params: dict[str, Param]) -> list[list[Any]]:
    return json.loads(json.dumps([[name, param.dump()] for name, param in params.items()]))


class TestFormsAsBefore:
    #: Params added since the forms were captured (the form is otherwise unchanged, in order).
    ADDED = {"share_params": ["allowed_spaces", "denied_spaces"]}

    def test_share_trigger_form(self):
        now = _dumps(dag_defaults.SHARE_PARAMS)
        added = self.ADDED["share_params"]
        assert [name for name, _ in now if name in added] == added
        assert [item for item in now if item[0] not in added] == BEFORE["share_params"]

    def test_retire_trigger_form(self):
        assert _dumps(dag_defaults.RETIRE_PARAMS) == BEFORE["retire_params"]

    def test_connection_form(self):
        assert json.loads(json.dumps(list(provider_info.EXTRA_FIELDS.items()))) == BEFORE["extra_fields"]
        assert BEFORE["field_behaviour"] == provider_info.FIELD_BEHAVIOUR
        info = provider_info.get_provider_info()["connection-types"][0]
        assert info["conn-fields"] == provider_info.EXTRA_FIELDS
        assert info["ui-field-behaviour"] == provider_info.FIELD_BEHAVIOUR

    def test_task_defaults_and_constants(self):
        args = {k: getattr(v, "total_seconds", lambda v=v: v)() for k, v in dag_defaults.DEFAULT_ARGS.items()}
        assert args == BEFORE["default_args"]
        now = {name: getattr(dag_defaults, name) for name in BEFORE["constants"]}
        assert json.loads(json.dumps(now)) == BEFORE["constants"]
        assert dag_defaults.share_pool_body()["slots"] == BEFORE["constants"]["SHARE_POOL_SLOTS"]

    def test_each_param_is_fresh(self):
        # A run editing a param's default in place must not change the next parse's form.
        first = settings.param("clouds")
        first.value.append("local")
        assert settings.param("clouds").value == ["aws", "azure", "gcp"]
        assert settings.default("instance_count") is not settings.REGISTRY["instance_count"].default

    def test_a_setting_not_settable_as_a_param_has_none(self):
        with pytest.raises(ValueError, match="'share_mode' cannot be set as param"):
            settings.param("share_mode")
        with pytest.raises(KeyError, match="no setting 'pol_interval_seconds'"):
            settings.param("pol_interval_seconds")


# -------------------------------------------------------------------------------------------------- readers


class TestConfigOptions:
    @pytest.mark.parametrize(
        ("configured", "mode"), [(None, "worker"), ("  ", "worker"), (" Triggerer ", "triggerer"), ("worker", "worker")]
    )
    def test_share_mode(self, monkeypatch, configured, mode):
        if configured is None:
            monkeypatch.delenv("AIRFLOW__OCTOPUS__SHARE_MODE", raising=False)
        else:
            monkeypatch.setenv("AIRFLOW__OCTOPUS__SHARE_MODE", configured)
        assert settings.config_option("share_mode") == mode
        assert dag_defaults.share_mode() == mode

    def test_a_share_mode_out_of_bounds_fails_naming_the_option(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW__OCTOPUS__SHARE_MODE", "scheduler")
        with pytest.raises(ValueError) as raised:
            dag_defaults.share_mode()
        assert str(raised.value) == (
            "[octopus] share_mode (AIRFLOW__OCTOPUS__SHARE_MODE) must be one of worker, triggerer, got 'scheduler'"
        )

    @pytest.mark.parametrize(("configured", "pool"), [(None, "default_pool"), ("", "default_pool"), (" p1 ", "p1")])
    def test_share_pool(self, monkeypatch, configured, pool):
        if configured is None:
            monkeypatch.delenv("AIRFLOW__OCTOPUS__SHARE_POOL", raising=False)
        else:
            monkeypatch.setenv("AIRFLOW__OCTOPUS__SHARE_POOL", configured)
        assert settings.config_option("share_pool") == dag_defaults.share_pool() == pool

    def test_only_declared_options_are_read(self):
        with pytest.raises(ValueError, match="'timeout' cannot be set as \\[octopus\\]"):
            settings.config_option("timeout")


class TestConnectionExtras:
    def test_unset_null_or_blank_is_the_default(self):
        for extras in ({}, {"timeout": None}, {"timeout": "  "}):
            assert settings.connection_extra("timeout", extras) == 30.0
        assert settings.connection_extra("max_requests_per_minute", {}) is None
        assert settings.connection_extra("verify", {}) is True

    def test_uri_form_strings_are_parsed(self):
        assert settings.connection_extra("timeout", {"timeout": "12.5"}) == 12.5
        assert settings.connection_extra("page_size", {"page_size": "250"}) == 250
        assert settings.connection_extra("verify", {"verify": "Off"}) is False

    @pytest.mark.parametrize(
        ("name", "value", "expected"),
        [
            ("timeout", 0, "a number > 0"),
            ("page_size", 2.5, "an integer >= 1"),
            ("max_attempts", True, "an integer >= 1"),
            ("max_retry_seconds", "soon", "a number >= 0"),
        ],
    )
    def test_out_of_bounds_names_the_connection_and_the_bound(self, name, value, expected):
        with pytest.raises(ValueError) as raised:
            settings.connection_extra(name, {name: value}, conn_id="octopus_x")
        assert str(raised.value) == f"connection 'octopus_x': extra {name} must be {expected}, got {value!r}"

    def test_the_form_states_each_default_it_leaves_empty(self):
        for name, field in provider_info.EXTRA_FIELDS.items():
            s = REGISTRY[name]
            if isinstance(s.default, (int, float)) and not isinstance(s.default, bool):
                assert f"Default {settings._text(s.default)}." in field["description"], name
                assert provider_info.FIELD_BEHAVIOUR["placeholders"][name] == settings._text(s.default)
        hidden = {s.name for s in REGISTRY.values() if settings.EXTRA in s.where and not s.in_form}
        assert hidden == {"retry_initial_wait", "retry_max_wait"} and not hidden & set(provider_info.EXTRA_FIELDS)


#: Variables the package sets for its scripts, not settings: the interpreter, and the API key from the connection.
SET_BY_THE_PACKAGE = {"OCTOPUS_PYTHON", "OCTOPUS_API_KEY"}
#: Read where the environment is read (configure-tentacle.sh runs on the VMs, not on Airflow).
READERS = [
    *sorted(PACKAGE.glob("*.py")),
    ROOT / "include" / "terraform-fleet.sh",
    ROOT / "include" / "remove-instance.sh",
]


class TestEnvironment:
    def test_every_variable_the_package_reads_is_declared(self):
        declared = {s.env_var.replace("<CLOUD>", "") for s in REGISTRY.values() if s.env_var}
        # Prefixes (OCTOPUS_TF_, OCTOPUS_WORKERS_) are passthrough rules of operators.py, not variables.
        prefixes = {"OCTOPUS_TF_", "OCTOPUS_WORKERS_"}
        read = {m for path in READERS for m in re.findall(r"\bOCTOPUS_[A-Z_]*[A-Z_]", path.read_text())}
        assert read - declared - SET_BY_THE_PACKAGE - prefixes == set()
        assert declared <= read, "declared but read nowhere"

    def test_the_scripts_use_the_declared_defaults(self):
        checked = 0
        for s in REGISTRY.values():
            for script in s.scripts:
                text = (ROOT / "include" / script).read_text()
                assert s.env_var.split("<")[0] in text, (s.name, script)
                found = re.findall(r"\$\{" + re.escape(s.env_var) + r":-([^}$]*)\}", text)
                if s.default not in (None, "") and found:
                    assert {settings._text(s.default)} == set(found), (s.name, script, found)
                    checked += 1
        assert checked >= 3  # OCTOPUS_TF_LOCK_TIMEOUT, OCTOPUS_TF_ALLOW_UNNAMED_REMOVAL, OCTOPUS_TF_REMOVE_TIMEOUT

    def test_env_reads_typed_values_with_defaults(self):
        assert settings.env("tf_backend", cloud="aws", environ={}) == "local"
        assert settings.env("tf_backend", cloud="gcp", environ={"OCTOPUS_TF_BACKEND_GCP": " gcs "}) == "gcs"
        assert settings.env("shared_state_dir", environ={"OCTOPUS_WORKERS_SHARED_STATE_DIR": "Yes"}) is True
        assert settings.env("tf_remove_timeout", environ={"OCTOPUS_TF_REMOVE_TIMEOUT": "60"}) == 60
        assert settings.env("include_dir", environ={}) is None
        with pytest.raises(ValueError, match="OCTOPUS_TF_REMOVE_TIMEOUT must be an integer >= 1, got '0'"):
            settings.env("tf_remove_timeout", environ={"OCTOPUS_TF_REMOVE_TIMEOUT": "0"})
        with pytest.raises(ValueError, match="per cloud"):
            settings.env("tf_backend", environ={})


# ------------------------------------------------------------------------------------------------------ docs


class TestDocs:
    def test_the_table_in_the_docs_is_the_registry(self):
        committed = (ROOT / "docs" / "settings.md").read_text()
        assert committed == settings.markdown_table(), (
            "docs/settings.md is out of date: run .venv/bin/python -m octopus.settings docs/settings.md"
        )

    def test_the_table_has_one_row_per_setting(self):
        rows = [line for line in settings.markdown_table().splitlines() if line.startswith("| `")]
        assert [row.split("`")[1] for row in rows] == sorted(
            REGISTRY,
            key=lambda n: [*settings.WHERE, settings.CONSTANT].index(
                REGISTRY[n].where[0] if REGISTRY[n].where else settings.CONSTANT
            ),
        )

    def test_the_connection_doc_points_to_the_table(self):
        assert "settings.md" in (ROOT / "docs" / "connection.md").read_text()


class TestRenderedBooleans:
    """``octopus.templating.as_bool`` takes the same words as a boolean setting (and Jinja's rendering of unset)."""

    @pytest.mark.parametrize(
        ("rendered", "value"),
        [("True", True), (" yes ", True), ("on", True), ("1", True), ("False", False), ("off", False), ("", False)]
        + [("None", False), (True, True), (0, False)],
    )
    def test_words(self, rendered, value):
        from octopus.templating import as_bool

        assert as_bool(rendered) is value

    def test_anything_else_fails_naming_the_words(self):
        from octopus.templating import as_bool

        with pytest.raises(ValueError, match=r"expected a boolean \(.*off.*yes\), got 'maybe'"):
            as_bool("maybe")
