"""One file out of a multipart/form-data body, streamed: the parts are read as the body arrives, and
the bytes of the named file field are handed on in chunks without the whole body being held.

Why not Starlette's UploadFile: it needs python-multipart (not a dependency of the suite) and spools
the whole body before the route runs, so a 10 MB upload would be read in full before its size, its
org's pause or its booking could refuse it, and disk under the gateway would fill with them. Here the
route checks first and then streams: memory is one network read plus the delimiter's length.

Only what a browser or curl sends is accepted: a boundary from the Content-Type, parts with a
Content-Disposition naming the field. Other fields are skipped; a second file field of the same name
is ignored (the first is the upload)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from gateway.problems import ProblemError

MAX_HEADER_BYTES = 16 * 1024
_BOUNDARY = re.compile(r'boundary="?([^";,]{1,200})"?', re.IGNORECASE)
_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)


def boundary_of(content_type: str) -> bytes:
    """The delimiter of a multipart/form-data Content-Type; 415 for any other type."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ProblemError(
            415, "unsupported_media_type", "send the photo as multipart/form-data with a field named file"
        )
    found = _BOUNDARY.search(content_type)
    if not found:
        raise ProblemError(400, "bad_request", "the multipart Content-Type has no boundary")
    return found.group(1).encode("latin-1")


def _malformed(what: str) -> ProblemError:
    return ProblemError(400, "bad_request", f"malformed multipart body: {what}")


class _Reader:
    """The body with a pushback buffer, so the parser can look ahead for delimiters."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self.body = body
        self.buffer = b""
        self.done = False

    async def more(self) -> bool:
        if self.done:
            return False
        async for piece in self.body:
            if piece:
                self.buffer += piece
                return True
        self.done = True
        return False


async def file_field(
    body: AsyncIterator[bytes], boundary: bytes, field: str
) -> tuple[str, str, AsyncIterator[bytes]]:
    """(filename, content type, the file's bytes) of the first part named `field`; 422 without one.
    The returned iterator must be read to its end (or abandoned with the request)."""
    reader = _Reader(body)
    opening = b"--" + boundary
    delimiter = b"\r\n--" + boundary
    # The preamble up to the first delimiter.
    while opening not in reader.buffer:
        if len(reader.buffer) > MAX_HEADER_BYTES or not await reader.more():
            raise _malformed("no opening boundary")
    reader.buffer = reader.buffer[reader.buffer.index(opening) + len(opening) :]
    while True:
        while len(reader.buffer) < 2 and await reader.more():
            pass
        if reader.buffer.startswith(b"--"):
            raise ProblemError(
                422,
                "validation_error",
                "no file: send the photo in a form field named file",
                errors=[{"field": field, "message": "required"}],
            )
        while b"\r\n\r\n" not in reader.buffer:
            if len(reader.buffer) > MAX_HEADER_BYTES or not await reader.more():
                raise _malformed("part headers not terminated")
        head, reader.buffer = reader.buffer.split(b"\r\n\r\n", 1)
        headers = _headers(head)
        disposition = headers.get("content-disposition", b"")
        name = _NAME.search(disposition)
        if name and name.group(1).decode("latin-1") == field:
            filename = re.search(rb'filename="([^"]*)"', disposition)
            return (
                filename.group(1).decode("utf-8", "replace")[:255] if filename else "",
                headers.get("content-type", b"").decode("latin-1")[:100],
                _part_body(reader, delimiter),
            )
        async for _ in _part_body(reader, delimiter):  # another field: skipped, not kept
            pass


def _headers(head: bytes) -> dict[str, bytes]:
    headers: dict[str, bytes] = {}
    for line in head.split(b"\r\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(b":")
        if not sep:
            raise _malformed("a part header without a colon")
        headers[key.strip().decode("latin-1").lower()] = value.strip()
    return headers


async def _part_body(reader: _Reader, delimiter: bytes) -> AsyncIterator[bytes]:
    """The part's bytes up to the next delimiter; the reader is left after that delimiter."""
    while True:
        at = reader.buffer.find(delimiter)
        if at >= 0:
            data, reader.buffer = reader.buffer[:at], reader.buffer[at + len(delimiter) :]
            if data:
                yield data
            return
        # Keep what could be the start of a delimiter split across reads.
        keep = len(delimiter) - 1
        if len(reader.buffer) > keep:
            data, reader.buffer = reader.buffer[:-keep], reader.buffer[-keep:]
            yield data
        if not await reader.more():
            raise _malformed("the body ended inside a part")
