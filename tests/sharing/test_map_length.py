"""``check_map_length``: a run that maps more space indexes than Airflow allows is refused, naming the fix."""

from __future__ import annotations

import pytest

from octopus.sharing import SharingError, check_map_length


def test_up_to_the_limit_passes():
    check_map_length(1024, 1024, task_id="share_to_space")
    check_map_length(0, 1024, task_id="share_to_space")


def test_over_the_limit_names_the_counts_the_setting_and_the_alternative():
    with pytest.raises(SharingError) as raised:
        check_map_length(2000, 1024, task_id="retire_copies")
    message = str(raised.value)
    assert "2000 spaces to visit, one retire_copies index each, but Airflow maps at most 1024" in message
    assert "[core] max_map_length" in message and "AIRFLOW__CORE__MAX_MAP_LENGTH to at least 2000" in message
    assert "target_spaces" in message
