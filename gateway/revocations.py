"""Revoked sessions, fed by cws.iam.session.revoked. The gateway verifies access tokens locally;
this set is how a logout or an admin's "log this user out" takes effect within a second without an
IAM call on every request. At start-up it replays the last access-token lifetime from JetStream,
so a restarted gateway knows every revocation that could still matter."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from cws.iam.v1 import events_pb2
from nats.aio.msg import Msg

from libs.common.bus import EventBus, follow_subject
from libs.common.logs import get_logger

log = get_logger(__name__)
SUBJECT = "cws.iam.session.revoked"


class RevokedSessions:
    def __init__(self, bus: EventBus, access_ttl_seconds: int) -> None:
        self.bus = bus
        # An entry can go once every access token of that session has expired.
        self.keep_seconds = access_ttl_seconds + 120
        self._revoked: dict[str, float] = {}
        self._fed = False

    @property
    def live(self) -> bool:
        """While NATS is down, revocations cannot arrive: the gateway then asks IAM instead."""
        return self._fed and self.bus.is_connected

    def _set_fed(self, fed: bool) -> None:
        self._fed = fed

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self._revoked

    def add(self, session_id: str) -> None:
        self._revoked[session_id] = time.monotonic() + self.keep_seconds

    async def _on_message(self, message: Msg) -> None:
        try:
            event = events_pb2.SessionRevoked.FromString(message.data)
        except Exception:  # a malformed event must not stop the feed
            log.warning("bad_revocation_event", subject=message.subject)
            return
        for session_id in event.session_ids:
            self.add(session_id)

    async def run(self) -> None:
        await asyncio.gather(
            follow_subject(
                self.bus, SUBJECT, timedelta(seconds=self.keep_seconds), self._on_message, self._set_fed
            ),
            self._expire(),
        )

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(60)
            now = time.monotonic()
            for session_id in [s for s, until in self._revoked.items() if until < now]:
                del self._revoked[session_id]
