"""A peer's gRPC refusal becomes the caller's own typed answer (billing, media and integrations all
call their peers inside peer_answers)."""

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from libs.common.errors import InvalidArgument, NotFound, Unavailable
from libs.common.grpc_client import peer_answers


def refusal(code: grpc.StatusCode, details: str = "") -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details=details)


def test_not_found_stays_not_found() -> None:
    with pytest.raises(NotFound) as raised, peer_answers("booking"):
        raise refusal(grpc.StatusCode.NOT_FOUND)
    assert raised.value.code == "booking_not_found"


def test_a_refused_argument_is_a_422_naming_the_peers_reason() -> None:
    # Integrations answered UNAVAILABLE here before ("try again"), which no retry could ever mend.
    with pytest.raises(InvalidArgument) as raised, peer_answers("booking"):
        raise refusal(grpc.StatusCode.INVALID_ARGUMENT, "ends_at must be after starts_at")
    assert raised.value.code == "booking_refused"
    assert "ends_at must be after starts_at" in raised.value.detail


def test_a_refused_id_is_not_found_where_the_caller_says_so() -> None:
    with pytest.raises(NotFound) as raised, peer_answers("booking", refused_means_not_found=True):
        raise refusal(grpc.StatusCode.INVALID_ARGUMENT, "booking_id is not a uuid")
    assert raised.value.code == "booking_not_found"


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL]
)
def test_anything_else_is_unavailable(code: grpc.StatusCode) -> None:
    with pytest.raises(Unavailable) as raised, peer_answers("notify"):
        raise refusal(code)
    assert raised.value.code == "notify_unavailable"


def test_an_answer_passes_through() -> None:
    with peer_answers("iam"):
        answered = 42
    assert answered == 42
