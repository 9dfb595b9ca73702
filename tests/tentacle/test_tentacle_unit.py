"""Unit tests of the Tentacle simulator that need no server: options, link templates, local state."""

from __future__ import annotations

import logging
import re

import pytest

from octopus_emulator import tentacle
from octopus_emulator.tentacle import RegistrationError, expand, parse_options
from octopus_emulator.tentacle_state import TentacleHome, TrustedServer, new_subscription_id

BASE = ["--server", "http://127.0.0.1:8065", "--workerpool", "Pool", "--name", "w1", "--home", "/tmp/x"]


def test_api_key_comes_from_environment_when_flag_absent():
    opts = parse_options(BASE, environ={"OCTOPUS_API_KEY": "API-ENV"})
    assert opts.api_key == "API-ENV"


def test_api_key_flag_wins_over_environment():
    opts = parse_options([*BASE, "--apiKey", "API-FLAG"], environ={"OCTOPUS_API_KEY": "API-ENV"})
    assert opts.api_key == "API-FLAG"


def test_missing_api_key_is_an_actionable_error():
    with pytest.raises(RegistrationError, match="--apiKey or the OCTOPUS_API_KEY environment variable"):
        parse_options(BASE, environ={})


def test_worker_pool_is_required_with_tentacles_message():
    argv = ["--server", "http://h:1", "--name", "w1"]
    with pytest.raises(RegistrationError, match=re.escape("Please specify a worker pool name, slug or Id")):
        parse_options(argv, environ={"OCTOPUS_API_KEY": "k"})


def test_listening_comms_style_is_rejected():
    with pytest.raises(RegistrationError, match="TentaclePassive .* not simulated"):
        parse_options([*BASE, "--comms-style", "TentaclePassive"], environ={"OCTOPUS_API_KEY": "k"})


def test_unknown_comms_style_is_rejected():
    with pytest.raises(RegistrationError, match="valid communications style"):
        parse_options([*BASE, "--comms-style", "Carrier-Pigeon"], environ={"OCTOPUS_API_KEY": "k"})


def test_proxy_is_rejected_for_polling():
    with pytest.raises(RegistrationError, match="--proxy can only be used with --comms-style=TentaclePassive"):
        parse_options([*BASE, "--proxy", "P"], environ={"OCTOPUS_API_KEY": "k"})


def test_server_must_be_http_url():
    argv = ["--server", "127.0.0.1:8065", "--workerpool", "P", "--name", "w"]
    with pytest.raises(RegistrationError, match="--server must be an http"):
        parse_options(argv, environ={"OCTOPUS_API_KEY": "k"})


def test_comms_address_defaults_to_server_host_and_port_flag():
    opts = parse_options([*BASE, "--server-comms-port", "20943"], environ={"OCTOPUS_API_KEY": "k"})
    assert opts.comms_address == "https://127.0.0.1:20943"


def test_comms_address_flag_overrides_host_and_port():
    opts = parse_options(
        [*BASE, "--server-comms-address", "https://comms.example:443"], environ={"OCTOPUS_API_KEY": "k"}
    )
    assert (opts.comms_host, opts.comms_port) == ("comms.example", 443)


def test_workerpool_camel_case_flag_is_repeatable():
    argv = [*BASE, "--workerPool", "Second"]
    assert parse_options(argv, environ={"OCTOPUS_API_KEY": "k"}).worker_pools == ["Pool", "Second"]


def test_usage_error_returns_status_2_without_echoing_the_key(capsys):
    assert tentacle.main(["--apiKey", "API-SECRET-123", "--bogus"]) == 2
    captured = capsys.readouterr()
    assert "API-SECRET-123" not in captured.out + captured.err


def test_expand_query_template_drops_unset_variables():
    tpl = "/api/Spaces-1/workers{/id}{?skip,take,name,ids}"
    assert expand(tpl, name="my worker") == "/api/Spaces-1/workers?name=my%20worker"


def test_expand_path_segment():
    assert expand("/api/configuration/certificates{/id}{?skip,take}", id="certificate-global") == (
        "/api/configuration/certificates/certificate-global"
    )


def test_expand_simple_variable():
    assert expand("/api/{spaceId}", spaceId="Spaces-2") == "/api/Spaces-2"


@pytest.mark.parametrize(
    ("server", "link", "url"),
    [
        ("http://h:1", "/api/spaces", "http://h:1/api/spaces"),
        ("http://h:1/octopus", "/api/spaces", "http://h:1/octopus/api/spaces"),
        ("http://h:1/octopus", "/octopus/api/spaces", "http://h:1/octopus/api/spaces"),
        ("http://h:1/octopus", "~/api/spaces", "http://h:1/octopus/api/spaces"),
    ],
)
def test_links_resolve_under_a_path_prefix_exactly_once(server, link, url):
    assert tentacle.OctopusApi(server, "k").url(link) == url


def test_redact_filter_masks_the_key_in_log_records():
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "server said %s", ("API-XYZ",), None)
    tentacle._RedactFilter("API-XYZ").filter(record)
    assert record.getMessage() == "server said ***"


def test_subscription_id_has_tentacles_shape():
    assert re.fullmatch(r"poll://[a-z0-9]{20}/", new_subscription_id())


def test_certificate_thumbprint_is_40_uppercase_hex(tmp_path):
    assert re.fullmatch(r"[0-9A-F]{40}", TentacleHome(tmp_path / "h").ensure_certificate())


def test_certificate_is_generated_once(tmp_path):
    home = TentacleHome(tmp_path / "h")
    assert home.ensure_certificate() == home.ensure_certificate()


def test_certificate_private_key_is_owner_only(tmp_path):
    home = TentacleHome(tmp_path / "h")
    home.ensure_certificate()
    assert (home.path / "tentacle.pem").stat().st_mode & 0o077 == 0


def test_trusted_server_entry_is_updated_in_place_per_address(tmp_path):
    home = TentacleHome(tmp_path / "h")
    home.add_or_update_trusted_server(TrustedServer("A" * 40, "https://h:10943", "TentacleActive", "poll://a/"))
    home.add_or_update_trusted_server(TrustedServer("B" * 40, "https://h:10943", "TentacleActive", "poll://a/"))
    home.add_or_update_trusted_server(TrustedServer("B" * 40, "https://other:10943", "TentacleActive", "poll://b/"))
    entries = home.trusted_servers()
    assert [(e.address, e.thumbprint) for e in entries] == [
        ("https://h:10943", "B" * 40),
        ("https://other:10943", "B" * 40),
    ]


def test_unreadable_config_names_the_file(tmp_path):
    home = TentacleHome(tmp_path / "h")
    home.path.mkdir()
    (home.path / "tentacle.config.json").write_text("{not json")
    with pytest.raises(ValueError, match="tentacle.config.json is unreadable"):
        home.trusted_servers()


def test_main_accepts_the_command_name_first(capsys):
    assert tentacle.main(["register-worker", "--help"]) == 0
    assert "--workerpool" in capsys.readouterr().out


def test_main_rejects_other_tentacle_commands(capsys):
    assert tentacle.main(["deregister-worker"]) == 2
    assert "unknown tentacle command 'deregister-worker'" in capsys.readouterr().err
