"""Revoked sessions, fed by cws.iam.session.revoked. The gateway verifies access tokens locally;
this set is how a logout or an admin's "log this user out" takes effect within a second without an
IAM call on every request. At start-up it replays the last access-token lifetime from JetStream,
so a restarted gateway knows every revocation that could still matter."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from cws.iam.v1 import events_pb2
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg

from libs.common.bus import EventBus, follow_subject
from libs.common.event_types import Event
from libs.common.logs import get_logger

log = get_logger(__name__)

# Consumed: IAM's declaration (services/iam/events.py), repeated here as the gateway imports no service.
IAM_SESSION_REVOKED = Event(
    "cws.iam.session.revoked",
    events_pb2.SessionRevoked,
    doc="sessions ended (logout, reset, MFA change, refresh-token reuse): their access tokens stop working",
)
# What the gateway does with it, for proto/EVENTS.md (tools/events_catalogue.py).
FEED_DOC = (
    "in-memory revocation cache of every replica: an ordered consumer replaying the last access-token "
    "lifetime after each (re)connect"
)


class RevokedSessions:
    def __init__(self, bus: EventBus, access_ttl_seconds: int) -> None:
        self.bus = bus
        # An entry can go once every access token of that session has expired.
        self.keep_seconds = access_ttl_seconds + 120
        self._revoked: dict[str, float] = {}
        self._fed = False

    @property
    def live(self) -> bool:
        """Fed from the whole window: false while NATS is down, and after every (re)subscribe until
        the window is replayed (follow_subject); meanwhile the gateway asks IAM about each session."""
        return self._fed and self.bus.is_connected

    def _set_fed(self, fed: bool) -> None:
        self._fed = fed

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self._revoked

    def add(self, session_id: str) -> None:
        self._revoked[session_id] = time.monotonic() + self.keep_seconds

    async def _on_message(self, message: Msg) -> None:
        """A message that is no SessionRevoked can never become one: it is logged and skipped, so
        it cannot stop the feed. Any other error propagates to `follow_subject`, which subscribes
        again from the window start, so the revocation is replayed rather than lost."""
        try:
            event = IAM_SESSION_REVOKED.decode(message.data)
        except DecodeError as error:
            log.warning("bad_revocation_event", subject=message.subject, error=str(error))
            return
        for session_id in event.session_ids:
            self.add(session_id)

    async def run(self) -> None:
        await asyncio.gather(
            follow_subject(
                self.bus,
                IAM_SESSION_REVOKED.subject,
                timedelta(seconds=self.keep_seconds),
                self._on_message,
                self._set_fed,
            ),
            self._expire(),
        )

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(60)
            now = time.monotonic()
            for session_id in [s for s, until in self._revoked.items() if until < now]:
                del self._revoked[session_id]
