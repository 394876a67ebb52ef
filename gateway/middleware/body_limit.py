"""MAX_REQUEST_BODY_BYTES, enforced on the declared length and on what actually arrives."""

from __future__ import annotations

from starlette.datastructures import Headers

from gateway.middleware.common import ASGIApp, Message, Receive, Scope, Send, send_problem
from gateway.problems import ProblemError


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
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
