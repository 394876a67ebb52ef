"""The shared kit every servicer uses at its edge: ids, timestamps, paging, field problems, roles."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cws.common.v1 import roles_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from libs.common import roles
from libs.common.context import STAFF_ROLES
from libs.common.convert import from_ts, from_ts_or_none, page, parse_id, to_ts, to_ts_or_none
from libs.common.errors import FieldViolation, InvalidArgument


def only_violation(error: InvalidArgument) -> tuple[str, str]:
    [violation] = error.violations
    return violation.field, violation.description


# --- ids --------------------------------------------------------------------------------------


def test_parse_id_reads_a_uuid_in_any_of_its_spellings() -> None:
    value = uuid.uuid4()
    assert parse_id(str(value)) == value
    assert parse_id(str(value).upper(), "booking_id") == value
    assert parse_id(value.hex, "booking_id") == value


@pytest.mark.parametrize("bad", ["", "42", "not-a-uuid", "6f1c0b52-8d6e-4a3b-9f2d-5c7e1a9b3d40x"])
def test_parse_id_names_the_field_it_refuses(bad: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_id(bad, "booking_id")
    assert only_violation(refused.value) == ("booking_id", "must be a UUID")
    assert refused.value.code == "invalid_argument"


# --- timestamps -------------------------------------------------------------------------------


def test_a_datetime_survives_the_round_trip_through_a_timestamp() -> None:
    value = datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=UTC)
    stamp = to_ts(value)
    assert (stamp.seconds, stamp.nanos) == (int(value.timestamp()), 123456000)
    assert from_ts(stamp, "starts_at") == value
    assert from_ts(stamp, "starts_at").tzinfo is UTC


def test_a_datetime_in_another_zone_is_the_same_instant_in_utc() -> None:
    edmonton = timezone(timedelta(hours=-7))
    value = datetime(2026, 11, 24, 9, 0, tzinfo=edmonton)
    back = from_ts(to_ts(value), "starts_at")
    assert back == value
    assert back == datetime(2026, 11, 24, 16, 0, tzinfo=UTC)


def test_an_unset_required_timestamp_is_refused_by_name() -> None:
    with pytest.raises(InvalidArgument) as refused:
        from_ts(Timestamp(), "starts_at")
    assert only_violation(refused.value) == ("starts_at", "is required")


def test_optional_timestamps_map_unset_to_none_and_back() -> None:
    assert to_ts_or_none(None) is None
    assert from_ts_or_none(Timestamp()) is None
    value = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    stamp = to_ts_or_none(value)
    assert stamp is not None and from_ts_or_none(stamp) == value


# --- paging -----------------------------------------------------------------------------------


def test_page_defaults_an_unset_limit_and_keeps_what_is_in_bounds() -> None:
    assert page(0, 0) == (50, 0)
    assert page(1, 0) == (1, 0)
    assert page(200, 400) == (200, 400)
    assert page(0, 10, default=20, maximum=100) == (20, 10)
    assert page(100, 0, default=20, maximum=100) == (100, 0)


@pytest.mark.parametrize(
    ("limit", "offset", "maximum", "field"),
    [(201, 0, 200, "limit"), (-1, 0, 200, "limit"), (101, 0, 100, "limit"), (10, -1, 200, "offset")],
)
def test_page_refuses_out_of_bounds_by_field(limit: int, offset: int, maximum: int, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        page(limit, offset, maximum=maximum)
    assert only_violation(refused.value)[0] == field


# --- field problems ---------------------------------------------------------------------------


def test_invalid_argument_of_lists_every_problem() -> None:
    problems = [FieldViolation("email", "is not an address"), FieldViolation("starts_at", "is required")]
    error = InvalidArgument.of(problems)
    assert error.detail == "email is not an address; starts_at is required"
    assert error.violations == problems
    assert error.violations is not problems, "a copy: the caller's list may go on changing"
    assert error.code == "invalid_argument"
    assert InvalidArgument.of(problems[:1], code="bad_lead").code == "bad_lead"


# --- roles ------------------------------------------------------------------------------------


def test_role_is_the_proto_enum_by_name() -> None:
    proto_roles = [
        value.name.removeprefix("ROLE_")
        for value in roles_pb2.Role.DESCRIPTOR.values
        if value.name != "ROLE_UNSPECIFIED"
    ]
    assert [role.value for role in roles.Role] == proto_roles
    assert all(role.name == role.value for role in roles.Role)


def test_role_groups() -> None:
    role = roles.Role
    assert set(roles.STAFF) == STAFF_ROLES, "the signed context's staff roles and the enum's agree"
    assert roles.MANAGERS == (role.OWNER, role.ADMIN)
    assert roles.DISPATCH == (role.OWNER, role.ADMIN, role.DISPATCHER)
    assert roles.ANALYSTS == (role.OWNER, role.ADMIN, role.FINANCE)
    assert "ADMIN" in roles.MANAGERS and role.OWNER == "OWNER", "members are the strings a context carries"
