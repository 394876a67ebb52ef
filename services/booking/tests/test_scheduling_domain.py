"""Scheduling rules alone, without a database: windows, skill tags, worker lists, queue days."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from libs.common.errors import InvalidArgument
from services.booking import resources, scheduling

START = datetime(2031, 5, 5, 9, 0, tzinfo=UTC)


def fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


def test_a_window_ends_after_it_starts_and_spans_at_most_the_limit():
    window = resources.check_window(START, START + timedelta(days=31), max_days=31)
    assert window.as_range().lower == START and window.as_range().bounds == "[)"
    for ends_at in (START, START - timedelta(minutes=1), START + timedelta(days=31, seconds=1)):
        with pytest.raises(InvalidArgument) as raised:
            resources.check_window(START, ends_at, max_days=31)
        assert fields(raised) == ["ends_at"] and raised.value.code == "invalid_window"


def test_skill_tags_are_trimmed_bounded_and_blank_ones_ignored():
    assert scheduling._clean_tags([" deep ", "", "  ", "Windows"]) == ["deep", "Windows"]
    for tags in ([f"t{i}" for i in range(11)], ["x" * 51]):
        with pytest.raises(InvalidArgument) as raised:
            scheduling._clean_tags(tags)
        assert fields(raised) == ["skill_tags"]


def test_like_wildcards_in_tags_are_literal():
    assert scheduling._like_escape("100%_sure\\") == "100\\%\\_sure\\\\"


def test_worker_ids_are_uuids_deduplicated_bounded_and_sorted():
    a, b = sorted(uuid.uuid4() for _ in range(2))
    assert scheduling._worker_uuids([str(b), str(a), str(b)]) == [a, b]
    with pytest.raises(InvalidArgument) as raised:
        scheduling._worker_uuids([str(a), "nope"])
    assert fields(raised) == ["worker_ids.1"]
    with pytest.raises(InvalidArgument):
        scheduling._worker_uuids([str(uuid.uuid4()) for _ in range(21)])


def test_queue_days_default_seven_and_at_most_thirty():
    assert scheduling.queue_days(0) == 7
    assert [scheduling.queue_days(d) for d in (1, 30)] == [1, 30]
    for days in (-1, 31):
        with pytest.raises(InvalidArgument) as raised:
            scheduling.queue_days(days)
        assert fields(raised) == ["days"]
