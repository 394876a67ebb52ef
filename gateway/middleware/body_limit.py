"""MAX_REQUEST_BODY_BYTES, enforced on the declared length and on what actually arrives.

Streamed routes (photo uploads) have their own, larger limit and read their body as it arrives: a
chunked body is then not buffered here (that would hold a whole photo in memory before the route could
refuse it); the route checks the declared length and counts what it streams, and the limit given for
it here still stops a body that goes past it."""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.datastructures import Headers

from gateway.middleware.common import ASGIApp, Message, Receive, Scope, Send, send_problem
from gateway.problems import ProblemError


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, max_bytes: int, streamed: Sequence[tuple[re.Pattern[str], int]] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = tuple(streamed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_bytes = next((limit for path, limit in self.streamed if path.match(scope["path"])), None)
        if max_bytes is not None:
            return await self._streamed(scope, receive, send, max_bytes)
        too_large = ProblemError(413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes")
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.isdigit():
                return await send_problem(
                    scope, receive, send, ProblemError(400, "bad_request", "Content-Length is not a number")
                )
            if int(length) > self.max_bytes:
                return await send_problem(scope, receive, send, too_large)
        else:
            # No Content-Length (chunked): read up to the limit before the app runs, because an
            # error raised inside the app's body parsing would turn into FastAPI's generic 400.
            buffered = await self._buffer(scope, receive, send, too_large)
            if buffered is None:
                return None
            receive = buffered
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, counting_receive, send)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        too_large = ProblemError(413, "payload_too_large", f"request body exceeds {max_bytes} bytes")
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes):
            problem = (
                too_large
                if length.isdigit()
                else ProblemError(400, "bad_request", "Content-Length is not a number")
            )
            return await send_problem(scope, receive, send, problem)
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise too_large
            return message

        await self.app(scope, counting_receive, send)

    async def _buffer(
        self, scope: Scope, receive: Receive, send: Send, too_large: ProblemError
    ) -> Receive | None:
        """The whole body, replayed to the app; None when it was too large (413 already sent)."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await send_problem(scope, receive, send, too_large)
                return None
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return replay
