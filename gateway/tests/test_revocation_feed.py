"""The revocation feed (gateway/revocations.py) skips a message on cws.iam.session.revoked that is no
SessionRevoked, logging it, and goes on to apply the next one: one malformed event must neither stop
the feed nor cost the revocations after it."""

from __future__ import annotations

from cws.iam.v1 import events_pb2

from gateway.revocations import IAM_SESSION_REVOKED
from libs.common.tokens import decode_access
from tools.processes import DEV_SECRETS
from tools.testkit import assert_problem, eventually, owner

# Field 1 (org_id) announces five bytes and carries two: protobuf refuses it with a DecodeError.
MALFORMED = b"\x0a\x05ab"


async def test_a_malformed_revocation_is_skipped_and_the_next_one_applied(gateway, http, make_org, stack):
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    users = f"{gateway.url}/v1/iam/users"
    assert (await http.get(users, headers=headers)).status_code == 200
    token = headers["Authorization"].removeprefix("Bearer ")
    session_id = decode_access(token, DEV_SECRETS["AUTH_SECRET_KEY"]).session_id
    # IAM never hears of this revocation: only the feed can make the gateway refuse the session.
    revoked = events_pb2.SessionRevoked(
        org_id=org.org_id, user_id=org.owner_id, session_ids=[session_id], reason="test"
    )
    seen_before = len(gateway.log_path.read_bytes())
    connection = await stack.nats.connect_as("iam")  # only iam may publish cws.iam.>
    try:
        stream = connection.jetstream()
        await stream.publish(IAM_SESSION_REVOKED.subject, MALFORMED)
        await stream.publish(IAM_SESSION_REVOKED.subject, revoked.SerializeToString())
    finally:
        await connection.close()

    async def refused() -> bool:
        assert_problem(await http.get(users, headers=headers), 401, "session_revoked")
        return True

    await eventually(refused, message="the revocation after the malformed message applied")
    log = gateway.log_path.read_bytes()[seen_before:].decode(errors="replace")
    assert "bad_revocation_event" in log  # seen and skipped, not silently dropped
    assert "follow_subject_error" not in log  # and the feed never had to start over
