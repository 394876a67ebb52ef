"""NUL characters are found in every string field of a request, nested and repeated included."""

from __future__ import annotations

from cws.booking.v1 import booking_pb2

from libs.common.errors import FieldViolation
from libs.common.text_input import NUL_MESSAGE, nul_violations


def test_nul_is_found_in_nested_and_repeated_strings_and_named() -> None:
    request = booking_pb2.CreateLeadRequest(
        name="a\x00b", structured_inputs=booking_pb2.StructuredInputs(cleaning_type="deep\x00")
    )
    assert nul_violations(request) == [
        FieldViolation("name", NUL_MESSAGE),
        FieldViolation("structured_inputs.cleaning_type", NUL_MESSAGE),
    ]
    suggestions = booking_pb2.ScheduleSuggestionsRequest(skill_tags=["ok", "bad\x00"])
    assert nul_violations(suggestions) == [FieldViolation("skill_tags", NUL_MESSAGE)]


def test_clean_requests_pass() -> None:
    assert nul_violations(booking_pb2.CreateLeadRequest(name="Ana", notes="tab\tand\nnewline")) == []
