"""gateway/multipart_stream.py: the file field of a multipart body, whatever the network's chunking,
with other fields skipped and malformed bodies refused as Problem+JSON (4xx), never a crash."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from gateway.multipart_stream import boundary_of, file_field
from gateway.problems import ProblemError

BOUNDARY = b"----cwsBoundary7MA4YWxkTrZu0gW"


def form(*parts: tuple[str, str | None, bytes]) -> bytes:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += b"--" + BOUNDARY + b"\r\n"
        body += f"Content-Disposition: {disposition}\r\n".encode()
        if filename:
            body += b"Content-Type: image/jpeg\r\n"
        body += b"\r\n" + data + b"\r\n"
    return body + b"--" + BOUNDARY + b"--\r\n"


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def read(body: bytes, size: int) -> tuple[str, str, bytes]:
    filename, content_type, stream = await file_field(pieces(body, size), BOUNDARY, "file")
    return filename, content_type, b"".join([chunk async for chunk in stream])


@pytest.mark.parametrize("size", [1, 2, 3, 7, 31, 32, 33, 64, 1000, 65536])
async def test_the_file_comes_out_whole_whatever_the_chunking(size: int) -> None:
    # Bytes that look like the start of a delimiter, inside the file, must stay file bytes.
    data = os.urandom(3000) + b"\r\n--" + BOUNDARY[:-1] + b"\r\n-" + os.urandom(500)
    body = form(("note", None, b"hello"), ("file", "../../etc/passwd.jpg", data), ("after", None, b"x"))
    assert await read(body, size) == ("../../etc/passwd.jpg", "image/jpeg", data)


async def test_a_form_without_the_file_field_is_422() -> None:
    with pytest.raises(ProblemError) as missing:
        await read(form(("photo", "a.jpg", b"abc")), 16)
    assert (missing.value.status, missing.value.code) == (422, "validation_error")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"no boundary at all",
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
    ],
)
async def test_a_malformed_body_is_400(body: bytes) -> None:
    with pytest.raises(ProblemError) as bad:
        await read(body, 8)
    assert bad.value.status == 400


def test_only_multipart_form_data_is_taken() -> None:
    assert boundary_of(f"multipart/form-data; boundary={BOUNDARY.decode()}") == BOUNDARY
    assert boundary_of('multipart/form-data; boundary="abc def"') == b"abc def"
    with pytest.raises(ProblemError) as other:
        boundary_of("image/jpeg")
    assert other.value.status == 415
    with pytest.raises(ProblemError) as none:
        boundary_of("multipart/form-data")
    assert none.value.status == 400
