"""Table-driven tests of the access policy (octopus.access_policy): parsing, deny wins, ids, names, patterns."""

from __future__ import annotations

import pytest

from octopus.access_policy import (
    AccessPolicy,
    AccessPolicyError,
    allowed_spaces,
    allows,
    explain,
    matching_entry,
    parse_access_policy,
    partition_spaces,
    unmatched_entries,
)

TEAM_A = {"Id": "Spaces-1", "Name": "Team A"}
TEAM_B = {"Id": "Spaces-2", "Name": "Team B"}
PROD = {"Id": "Spaces-12", "Name": "prod-eu"}
LEGACY = {"Id": "Spaces-13", "Name": "prod-legacy"}
SANDBOX = {"Id": "Spaces-20", "Name": "Sandbox 7"}
SPACES = [TEAM_A, TEAM_B, PROD, LEGACY, SANDBOX]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, AccessPolicy("all", (), ())),
        ({}, AccessPolicy("all", (), ())),
        ({"allow": "all"}, AccessPolicy("all", (), ())),
        ({"allow": "ALL"}, AccessPolicy("all", (), ())),
        ({"allow": "*"}, AccessPolicy("all", (), ())),
        ({"allow": []}, AccessPolicy("all", (), ())),
        ({"allow": None, "deny": None}, AccessPolicy("all", (), ())),
        ({"allow": "Team A"}, AccessPolicy("selected", ("Team A",), ())),
        ({"allow": [" Team A ", "team a", "Spaces-2"]}, AccessPolicy("selected", ("Team A", "Spaces-2"), ())),
        ({"deny": "Sandbox*"}, AccessPolicy("all", (), ("Sandbox*",))),
        ({"allow": ["prod-*"], "deny": ["prod-legacy"]}, AccessPolicy("selected", ("prod-*",), ("prod-legacy",))),
    ],
)
def test_parse(raw, expected):
    assert parse_access_policy(raw) == expected
    # the param form reads back to the same policy
    assert parse_access_policy(expected.to_param()) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("Team A", "must be an object with 'allow' and/or 'deny'"),
        ({"denied": ["Sandbox"]}, "unknown key(s) 'denied'"),
        ({"allow": 3}, "'allow' must be a list"),
        ({"deny": {"x": 1}}, "'deny' must be a list"),
        ({"allow": ["Team A", 7]}, "allow[1] must be a space name, id or glob pattern (a string), not 7"),
        ({"deny": ["Sandbox", "  "]}, "deny[1] is empty"),
        ({"allow": ["Team A", "all"]}, "allow[1] is 'all', which means every space"),
        ({"allow": ["*", "Team A"]}, "allow[0] is '*'"),
        ({"deny": ["prod-[eu"]}, "deny[0] 'prod-[eu' has an unclosed '['"),
    ],
)
def test_parse_rejects_with_the_bad_entry_named(raw, message):
    with pytest.raises(AccessPolicyError) as err:
        parse_access_policy(raw)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("raw", "space", "allowed"),
    [
        # all
        ({}, TEAM_A, True),
        ({}, SANDBOX, True),
        # by name, case-insensitive and trimmed
        ({"allow": ["team a"]}, TEAM_A, True),
        ({"allow": ["team a"]}, TEAM_B, False),
        # by id, case-insensitive; an id is not a prefix match
        ({"allow": ["spaces-1"]}, TEAM_A, True),
        ({"allow": ["Spaces-1"]}, PROD, False),
        # patterns match names and ids
        ({"allow": ["prod-*"]}, PROD, True),
        ({"allow": ["prod-*"]}, TEAM_A, False),
        ({"allow": ["Spaces-1?"]}, PROD, True),
        ({"allow": ["Spaces-1?"]}, TEAM_A, False),
        ({"allow": ["team [ab]"]}, TEAM_B, True),
        # deny wins over allow, by name, id or pattern
        ({"allow": ["prod-*"], "deny": ["prod-legacy"]}, LEGACY, False),
        ({"allow": ["prod-*"], "deny": ["prod-legacy"]}, PROD, True),
        ({"deny": ["Spaces-20"]}, SANDBOX, False),
        ({"deny": ["sandbox*"]}, SANDBOX, False),
        ({"allow": ["Team A"], "deny": ["Team A"]}, TEAM_A, False),
        ({"deny": ["sandbox*"]}, TEAM_A, True),
    ],
)
def test_allows(raw, space, allowed):
    assert allows(parse_access_policy(raw), space) is allowed


@pytest.mark.parametrize(
    ("raw", "space", "sentence"),
    [
        ({}, TEAM_A, "space 'Team A' (Spaces-1) is allowed: the policy allows all spaces and no deny entry matches it"),
        ({"allow": ["team*"]}, TEAM_B, "space 'Team B' (Spaces-2) is allowed by allow entry 'team*'"),
        (
            {"allow": ["prod-*"], "deny": ["prod-legacy"]},
            LEGACY,
            "space 'prod-legacy' (Spaces-13) is denied by deny entry 'prod-legacy', although allow entry 'prod-*' "
            "matches it (deny wins)",
        ),
        (
            {"allow": ["Team A", "prod-*"]},
            SANDBOX,
            "space 'Sandbox 7' (Spaces-20) is not allowed: no allow entry ('Team A', 'prod-*') matches it",
        ),
    ],
)
def test_explain_names_the_deciding_entry(raw, space, sentence):
    assert explain(parse_access_policy(raw), space) == sentence


def test_filtering_helpers_keep_order_and_extra_fields():
    policy = parse_access_policy({"allow": ["prod-*", "Team B"], "deny": ["*legacy"]})
    spaces = [dict(s, Extra=i) for i, s in enumerate(SPACES)]
    inside, outside = partition_spaces(policy, spaces)
    assert [s["Name"] for s in inside] == ["Team B", "prod-eu"]
    assert [s["Name"] for s in outside] == ["Team A", "prod-legacy", "Sandbox 7"]
    assert inside[0]["Extra"] == 1
    assert allowed_spaces(policy, spaces) == inside
    assert matching_entry(policy.deny, LEGACY) == "*legacy"
    assert matching_entry(policy.deny, PROD) is None


def test_unmatched_entries_are_reported_for_a_warning():
    policy = parse_access_policy({"allow": ["Team A", "Tema B", "prod-*"], "deny": ["Gone*"]})
    assert unmatched_entries(policy, SPACES) == {"allow": ["Tema B"], "deny": ["Gone*"]}
    assert unmatched_entries(parse_access_policy({}), SPACES) == {}


def test_describe():
    assert parse_access_policy({}).describe() == "all spaces"
    assert (
        parse_access_policy({"allow": ["a", "b*"], "deny": ["b2"]}).describe()
        == "spaces matching 'a', 'b*' except 'b2'"
    )
