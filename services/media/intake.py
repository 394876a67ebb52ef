"""Photo intake: one upload, streamed in, checked and cleaned, written to a file ready to be stored.

`receive` is everything between the upload's bytes and a storage backend, and nothing else (no gRPC,
no database, no storage keys):

1. Size: the chunks are counted as they arrive and written to a temp file in `spool_dir` in batches of
   about 1 MiB (file I/O in a worker thread); the first byte past `max_bytes` stops the reading with
   `payload_too_large`. The upload is never held in memory whole.
2. Type, from the content only (the name and declared type are never asked): the magic bytes say what
   the file claims to be, and Pillow, allowed only that one decoder, must then open, verify and fully
   decode it. Not an allowed image: `unsupported_media_type`. Claims to be one but does not decode
   (truncated, corrupt): `invalid_image` on field `file`. More pixels than `max_pixels` (a
   decompression bomb: a few KB of PNG can declare gigapixels): `image_too_large`, refused before any
   pixel is decoded.
3. Clean: the decoded pixels are re-encoded into a new file, so no metadata survives (EXIF with GPS,
   XMP, IPTC, comments, PNG text chunks, trailing data after the image). The EXIF orientation is
   applied to the pixels first (ImageOps.exif_transpose), so the photo looks the same with no
   orientation tag left. The ICC colour profile is kept: it is colour data, not personal data, and
   without it a phone's Display P3 photo shows washed out. Only the first frame of an animated file is
   kept.

The decode runs in a worker thread (asyncio.to_thread), at most DECODE_SLOTS at a time per event loop:
memory grows with the pixel count (about 3 bytes a pixel, twice while a rotation is applied), not
with the file size, and the slots bound it.

The returned `Intake.path` is the cleaned file in `spool_dir`; the caller moves it into storage (or
deletes it). On every failure both the temp file and any partial output are removed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from libs.common.errors import FieldViolation, InvalidArgument, PayloadTooLarge

FIELD = "file"
# Batches written to the spool file: large enough that a 10 MB upload is ~10 thread hops, small enough
# that 16 uploads at once hold only ~16 MiB of buffers.
FLUSH_BYTES = 1024 * 1024
# 50 MP: every phone camera's default output (12, 24, 48 MP) fits; a 200 MP "full resolution" shot does
# not. Decoded RGB is ~150 MB at this size, so this is also the memory bound of one decode.
DEFAULT_MAX_PIXELS = 50_000_000
# Decodes at once per event loop (the machine's cores): the rest wait their turn without blocking the loop.
DECODE_SLOTS = max(1, os.cpu_count() or 1)
JPEG_QUALITY = 90
WEBP_LOSSY_QUALITY = 90


@dataclass(frozen=True)
class Intake:
    """The cleaned file: every field describes it, not the upload as received."""

    path: Path
    mime: str
    ext: str
    bytes: int
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class _Kind:
    mime: str
    ext: str
    # The Pillow decoders allowed to open it: one family only, so a file never reaches a decoder its
    # magic bytes did not name (Pillow otherwise tries every plugin it has, EPS and friends included).
    pillow_formats: tuple[str, ...]


# What intake can verify and clean. HEIC is not here: Pillow reads it only with the pillow-heif plugin,
# which is not installed (iPhones upload JPEG with "Most Compatible" or through the browser's converter).
KINDS = {
    "image/jpeg": _Kind("image/jpeg", "jpg", ("JPEG", "MPO")),  # MPO: a phone's JPEG with a preview
    "image/png": _Kind("image/png", "png", ("PNG",)),
    "image/webp": _Kind("image/webp", "webp", ("WEBP",)),
    "image/gif": _Kind("image/gif", "gif", ("GIF",)),
}
SUPPORTED_MIME = frozenset(KINDS)
DEFAULT_ALLOWED_MIME = frozenset({"image/jpeg", "image/png", "image/webp"})


async def receive(
    chunks: AsyncIterator[bytes],
    *,
    max_bytes: int,
    allowed_mime: frozenset[str],
    spool_dir: Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Intake:
    """Read one upload to its end and return the cleaned file (see the module's docstring)."""
    await asyncio.to_thread(spool_dir.mkdir, parents=True, exist_ok=True)
    raw = spool_dir / f".upload-{uuid.uuid4().hex}.part"
    try:
        size = await _spool(chunks, raw, max_bytes)
        if size == 0:
            raise _invalid_image("file is empty", "is empty")
        async with _decode_slot():
            return await asyncio.to_thread(_clean, raw, allowed_mime, spool_dir, max_pixels)
    finally:
        # Cancelled (the client went away) or refused: nothing of the upload stays behind.
        raw.unlink(missing_ok=True)


async def _spool(chunks: AsyncIterator[bytes], dest: Path, max_bytes: int) -> int:
    """Write the chunks to `dest`; stop at the first byte past `max_bytes`. The caller owns `chunks`:
    past the limit it is left unread, not drained."""
    handle = await asyncio.to_thread(dest.open, "xb")
    try:
        buffer = bytearray()
        total = 0
        async for chunk in chunks:
            total += len(chunk)
            if total > max_bytes:
                raise PayloadTooLarge(
                    f"file is larger than the limit of {max_bytes} bytes ({_human(max_bytes)})",
                    violations=[FieldViolation(FIELD, f"must be at most {max_bytes} bytes")],
                )
            buffer += chunk
            if len(buffer) >= FLUSH_BYTES:
                await asyncio.to_thread(handle.write, buffer)
                buffer = bytearray()
        if buffer:
            await asyncio.to_thread(handle.write, buffer)
        return total
    finally:
        handle.close()  # buffered data is already written: closing does not block


def _clean(raw: Path, allowed_mime: frozenset[str], spool_dir: Path, max_pixels: int) -> Intake:
    """Worker thread: decide the type from the content, decode, re-encode without metadata."""
    with raw.open("rb") as handle:
        head = handle.read(512)
    mime = sniff(head)
    kind = KINDS.get(mime)
    if kind is None or mime not in allowed_mime:
        raise _unsupported(mime, allowed_mime)
    lossless_webp = mime == "image/webp" and _webp_is_lossless(raw)
    image = _decode(raw, kind, max_pixels)
    out = spool_dir / f"{uuid.uuid4().hex}.{kind.ext}"
    try:
        # Past the decode, a failure is ours (disk full, an encoder bug): it is not blamed on the upload.
        _save_clean(image, kind, out, lossless_webp)
        width, height, digest, size = _describe(out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        image.close()
    return Intake(
        path=out, mime=kind.mime, ext=kind.ext, bytes=size, sha256=digest, width=width, height=height
    )


def _decode(raw: Path, kind: _Kind, max_pixels: int) -> Image.Image:
    """The upload's pixels, upright. Every Pillow failure here is the upload's fault (a 4xx)."""
    try:
        # Pass 1: header and structure only (verify), the pixel count checked before any decode.
        with Image.open(raw, formats=list(kind.pillow_formats)) as probe:
            _check_pixels(probe.size, max_pixels)
            probe.verify()
        # Pass 2 (verify leaves an image unusable): the full decode catches truncation and bad data.
        with Image.open(raw, formats=list(kind.pillow_formats)) as image:
            _check_pixels(image.size, max_pixels)
            image.load()
            _upright(image)
    except Image.DecompressionBombError:
        raise _too_many_pixels(max_pixels) from None
    except (InvalidArgument, MemoryError):
        raise
    except UnidentifiedImageError:
        raise _invalid_image(
            f"file starts like {kind.mime} but is not a readable image", "is not a readable image"
        ) from None
    except Exception as error:
        # Pillow's words help ("image file is truncated"), unless they name a path of ours.
        reason = f" ({error})" if str(error) and "/" not in str(error) else ""
        raise _invalid_image(
            f"file is a truncated or corrupt {kind.mime} image{reason}", "is a truncated or corrupt image"
        ) from None
    return image


def _upright(image: Image.Image) -> None:
    """Apply the EXIF orientation to the pixels (the tag itself goes with the rest of the metadata)."""
    # An EXIF block Pillow cannot parse: the pixels are fine and the metadata is dropped anyway, so the
    # photo is kept as decoded rather than refused for its camera's quirks.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(image, in_place=True)


def _save_clean(image: Image.Image, kind: _Kind, out: Path, lossless_webp: bool) -> None:
    """Re-encode the decoded pixels with nothing from the source's metadata but what is named here:
    the ICC profile (colour) and transparency (pixels). `info` is cleared because some encoders copy
    from it on their own (JPEG comments, PNG's ICC, everything for GIF)."""
    icc = image.info.get("icc_profile")
    transparency = image.info.get("transparency")
    image.info = {}
    options: dict[str, Any] = {}
    if icc:
        options["icc_profile"] = icc
    if kind.mime == "image/jpeg":
        if image.mode not in ("L", "RGB", "CMYK"):
            image = image.convert("RGB")
        image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, **options)
    elif kind.mime == "image/png":
        if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
            image = image.convert("RGBA")
        elif transparency is not None:
            options["transparency"] = transparency
        image.save(out, "PNG", **options)
    elif kind.mime == "image/webp":
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if image.has_transparency_data else "RGB")
        if lossless_webp:
            image.save(out, "WEBP", lossless=True, **options)
        else:
            image.save(out, "WEBP", quality=WEBP_LOSSY_QUALITY, **options)
    else:  # GIF: palette images, first frame only; GIF carries no ICC profile.
        if transparency is not None and image.mode in ("P", "L"):
            options = {"transparency": transparency}
        else:
            options = {}
        image.save(out, "GIF", **options)


def _describe(path: Path) -> tuple[int, int, str, int]:
    """Width, height, sha256 and size of the written file, read back from it."""
    with Image.open(path) as written:
        width, height = written.size
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(FLUSH_BYTES):
            digest.update(block)
            size += len(block)
    return width, height, digest.hexdigest(), size


def sniff(head: bytes) -> str:
    """The type the first bytes announce (a label for the refusal message when it is no image we take)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "image/heic"
        return "video/mp4"
    if head.startswith(b"%PDF"):
        return "application/pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "application/zip"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in text:
        return "image/svg+xml"
    if text.startswith((b"<!doctype html", b"<html")) or b"<script" in text or b"<body" in text:
        return "text/html"
    if text.startswith(b"<?xml"):
        return "application/xml"
    if text.startswith(b"#!"):
        return "text/x-script"
    return "application/octet-stream"


def _webp_is_lossless(path: Path) -> bool:
    """Whether the WebP's (first) image is VP8L, lossless: it is re-encoded lossless then, and a lossy
    VP8 one at WEBP_LOSSY_QUALITY. Walks the RIFF chunks' headers only."""
    with path.open("rb") as handle:
        handle.seek(12)
        for _ in range(64):  # VP8X files have a few chunks before the image; never loop on junk
            header = handle.read(8)
            if len(header) < 8:
                return False
            fourcc, size = header[:4], int.from_bytes(header[4:], "little")
            if fourcc == b"VP8L":
                return True
            if fourcc == b"VP8 ":
                return False
            if fourcc == b"ANMF":  # animated: the first frame's own chunks follow a 16-byte header
                handle.seek(16, os.SEEK_CUR)
                continue
            handle.seek(size + (size & 1), os.SEEK_CUR)
    return False


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise _invalid_image("file is an image with no pixels", "has no pixels")
    if width * height > max_pixels:
        raise _too_many_pixels(max_pixels, width, height)


def _too_many_pixels(max_pixels: int, width: int | None = None, height: int | None = None) -> InvalidArgument:
    found = f" ({width}x{height})" if width and height else ""
    return InvalidArgument.of(
        [FieldViolation(FIELD, f"has more than {max_pixels} pixels{found}")], code="image_too_large"
    )


def _invalid_image(detail: str, description: str) -> InvalidArgument:
    return InvalidArgument(detail, code="invalid_image", violations=[FieldViolation(FIELD, description)])


def _unsupported(mime: str, allowed_mime: frozenset[str]) -> InvalidArgument:
    allowed = ", ".join(sorted(allowed_mime & SUPPORTED_MIME)) or "none"
    hint = ""
    if mime == "image/heic":
        hint = " (HEIC cannot be read here: upload JPEG, e.g. the iPhone's 'Most Compatible' camera format)"
    return InvalidArgument(
        f"file content is {mime}, which is not accepted; allowed: {allowed}{hint}",
        code="unsupported_media_type",
        violations=[FieldViolation(FIELD, f"must be one of {allowed}")],
    )


def _human(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):g} MiB"
    if size >= 1024:
        return f"{size / 1024:g} KiB"
    return f"{size} bytes"


# One semaphore per event loop: an asyncio.Semaphore belongs to the loop it first waits on, and tests
# (or a process that restarts its loop) may run several loops over the module's life.
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _decode_slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        slot = _slots[loop] = asyncio.Semaphore(DECODE_SLOTS)
    return slot
