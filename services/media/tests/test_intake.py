"""Photo intake (services/media/intake.py) on real files made with Pillow in the test: what is stored
(type from the content, metadata gone, orientation applied) and what is refused (oversize while
streaming, disguised types, truncated images, decompression bombs), with the spool left empty after
every refusal. No database, no services: runs at any time."""

from __future__ import annotations

import asyncio
import hashlib
import io
import struct
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from libs.common.errors import InvalidArgument, PayloadTooLarge
from services.media.intake import DEFAULT_ALLOWED_MIME, Intake, receive, sniff

GPS_LATITUDE = (43.0, 39.0, 12.5)  # a client's street, to the metre
SECRET = b"Maple-Street-42"  # a marker put in every metadata slot: it must not survive anywhere


class Chunks:
    """An upload as the gateway streams it, counting how much of it was ever asked for."""

    def __init__(self, data: bytes, size: int = 64 * 1024) -> None:
        self.data = data
        self.size = size
        self.yielded = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.size):
            self.yielded += 1
            yield self.data[start : start + self.size]


async def intake(
    data: bytes,
    spool: Path,
    *,
    max_bytes: int = 10 * 1024 * 1024,
    allowed: frozenset[str] = DEFAULT_ALLOWED_MIME,
    **options: int,
) -> Intake:
    return await receive(
        Chunks(data).__aiter__(), max_bytes=max_bytes, allowed_mime=allowed, spool_dir=spool, **options
    )


def gps_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif[ExifTags.Base.ImageDescription] = SECRET.decode()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = GPS_LATITUDE
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (79.0, 23.0, 1.5)
    return exif


def two_halves(width: int = 64, height: int = 32) -> Image.Image:
    """Left half red, right half blue: where they end up shows how the photo was turned."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image


def jpeg_with_everything(orientation: int = 1, image: Image.Image | None = None) -> bytes:
    """A phone's JPEG: EXIF with GPS, XMP, a comment, and an IPTC (APP13) block spliced in."""
    out = io.BytesIO()
    (image or two_halves()).save(
        out,
        "JPEG",
        quality=95,
        exif=gps_exif(orientation),
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + SECRET + b"</x:xmpmeta>",
        comment=SECRET,
    )
    data = out.getvalue()
    iptc = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00" + struct.pack(">I", len(SECRET)) + SECRET
    return data[:2] + b"\xff\xed" + struct.pack(">H", len(iptc) + 2) + iptc + data[2:]


def jpeg_markers(data: bytes) -> list[int]:
    """The JPEG's segment markers up to the image data (APPn, COM, DQT, SOF, DHT...)."""
    assert data[:2] == b"\xff\xd8"
    markers, at = [], 2
    while at < len(data):
        marker = data[at + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        at += 2 + length
    return markers


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A few hundred bytes that declare a huge picture: a decompression bomb's header."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
        + png_chunk(b"IEND", b"")
    )


def png_chunk_types(data: bytes) -> list[bytes]:
    kinds, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kinds.append(data[at + 4 : at + 8])
        at += 12 + length
    return kinds


def webp_chunk_types(data: bytes) -> list[bytes]:
    kinds, at = [], 12
    while at + 8 <= len(data):
        kinds.append(data[at : at + 4])
        (size,) = struct.unpack("<I", data[at + 4 : at + 8])
        at += 8 + size + (size & 1)
    return kinds


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "incoming"


def leftovers(spool: Path, keep: Intake | None = None) -> list[Path]:
    return [path for path in spool.iterdir() if keep is None or path != keep.path] if spool.exists() else []


# --- what is stored -----------------------------------------------------------------------------------


async def test_a_phone_jpeg_is_stored_without_gps_exif_xmp_iptc_or_comment(spool: Path) -> None:
    upload = jpeg_with_everything()
    assert Image.open(io.BytesIO(upload)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the test's premise

    result = await intake(upload, spool)

    stored = result.path.read_bytes()
    with Image.open(result.path) as image:
        assert image.format == "JPEG"
        assert not image.getexif()
        assert not image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert not {"exif", "xmp", "comment", "photoshop"} & set(image.info)
    assert SECRET not in stored and b"Exif" not in stored and b"PhoneCo" not in stored
    # Only JFIF (APP0), tables, frame and scan: no APP1 (EXIF/XMP), APP13 (IPTC) or COM segment.
    assert not {0xE1, 0xED, 0xFE} & set(jpeg_markers(stored))
    assert (result.mime, result.ext, result.path.suffix) == ("image/jpeg", "jpg", ".jpg")
    assert (result.width, result.height) == (64, 32)
    assert result.bytes == len(stored) == result.path.stat().st_size
    assert result.sha256 == hashlib.sha256(stored).hexdigest()
    assert leftovers(spool, keep=result) == []  # the raw upload is gone, only the cleaned file stays


async def test_the_exif_orientation_is_applied_to_the_pixels_and_dropped(spool: Path) -> None:
    # Orientation 6: the camera was turned a quarter clockwise; viewers rotate the 64x32 picture to
    # 32x64 with the left (red) half on top.
    result = await intake(jpeg_with_everything(orientation=6), spool)

    with Image.open(result.path) as image:
        assert image.size == (32, 64) == (result.width, result.height)
        assert ExifTags.Base.Orientation not in image.getexif()
        red, _, blue = image.convert("RGB").getpixel((16, 8))  # type: ignore[misc]
        assert red > 200 and blue < 60, "the top must be the red half"
        red, _, blue = image.convert("RGB").getpixel((16, 56))  # type: ignore[misc]
        assert blue > 200 and red < 60, "the bottom must be the blue half"


async def test_the_icc_colour_profile_is_kept(spool: Path) -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    upload = encoded(two_halves(), "JPEG", icc_profile=profile, exif=gps_exif())

    result = await intake(upload, spool)

    with Image.open(result.path) as image:
        assert image.info.get("icc_profile") == profile
        assert not image.getexif()


async def test_a_png_loses_its_text_chunks_and_exif_and_keeps_its_pixels(spool: Path) -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", SECRET.decode())
    text.add_text("Location", SECRET.decode(), zip=True)  # zTXt
    text.add_itxt("XML:com.adobe.xmp", SECRET.decode())  # iTXt, where XMP lives in a PNG
    original = Image.new("RGBA", (20, 10), (10, 200, 30, 128))
    upload = encoded(original, "PNG", pnginfo=text, exif=gps_exif())
    assert {b"tEXt", b"zTXt", b"iTXt", b"eXIf"} <= set(png_chunk_types(upload))

    result = await intake(upload, spool)

    stored = result.path.read_bytes()
    assert not {b"tEXt", b"zTXt", b"iTXt", b"eXIf"} & set(png_chunk_types(stored))
    assert SECRET not in stored
    with Image.open(result.path) as image:
        assert image.format == "PNG" and not getattr(image, "text", {}) and not image.getexif()
        assert image.mode == "RGBA" and image.tobytes() == original.tobytes()  # lossless, alpha kept


async def test_a_png_named_or_declared_jpg_is_stored_as_png(spool: Path) -> None:
    # The file name and the declared Content-Type are not even inputs of `receive`: whatever the
    # client called "photo.jpg" (image/jpeg), PNG content is stored as PNG.
    result = await intake(encoded(two_halves(), "PNG"), spool)

    assert (result.mime, result.ext, result.path.suffix) == ("image/png", "png", ".png")
    with Image.open(result.path) as image:
        assert image.format == "PNG"


async def test_a_palette_png_keeps_its_transparency(spool: Path) -> None:
    original = Image.new("P", (8, 8), 1)
    original.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    upload = encoded(original, "PNG", transparency=0)

    result = await intake(upload, spool)

    with Image.open(result.path) as image:
        assert image.mode == "P" and image.info.get("transparency") == 0


async def test_a_lossless_webp_stays_lossless_without_exif_or_xmp(spool: Path) -> None:
    original = two_halves()
    upload = encoded(original, "WEBP", lossless=True, exif=gps_exif(), xmp=SECRET)
    assert {b"EXIF", b"XMP "} <= set(webp_chunk_types(upload))

    result = await intake(upload, spool)

    stored = result.path.read_bytes()
    assert (result.mime, result.ext) == ("image/webp", "webp")
    assert b"VP8L" in webp_chunk_types(stored)
    assert not {b"EXIF", b"XMP "} & set(webp_chunk_types(stored)) and SECRET not in stored
    with Image.open(result.path) as image:
        assert image.convert("RGB").tobytes() == original.tobytes()


async def test_a_lossy_webp_is_re_encoded_lossy(spool: Path) -> None:
    upload = encoded(two_halves(), "WEBP", quality=80, exif=gps_exif(orientation=6))

    result = await intake(upload, spool)

    stored = result.path.read_bytes()
    assert b"VP8 " in webp_chunk_types(stored) and b"EXIF" not in webp_chunk_types(stored)
    assert (result.width, result.height) == (32, 64)


async def test_gif_is_taken_only_when_allowed_and_loses_its_comment(spool: Path) -> None:
    upload = encoded(Image.new("P", (10, 10), 3), "GIF", comment=SECRET)

    with pytest.raises(InvalidArgument) as refused:
        await intake(upload, spool)  # not in the default allowlist
    assert refused.value.code == "unsupported_media_type"

    result = await intake(upload, spool, allowed=DEFAULT_ALLOWED_MIME | {"image/gif"})
    assert (result.mime, result.ext) == ("image/gif", "gif")
    assert SECRET not in result.path.read_bytes()


async def test_exactly_max_bytes_is_accepted(spool: Path) -> None:
    upload = jpeg_with_everything()

    result = await intake(upload, spool, max_bytes=len(upload))

    assert result.mime == "image/jpeg"


# --- what is refused ----------------------------------------------------------------------------------


async def test_oversize_is_refused_while_streaming_after_reading_about_max_bytes(spool: Path) -> None:
    upload = Chunks(b"\xff\xd8\xff" + b"\x00" * (50 * 1024 * 1024), size=64 * 1024)  # 50 MiB offered
    limit = 256 * 1024

    with pytest.raises(PayloadTooLarge) as refused:
        await receive(upload.__aiter__(), max_bytes=limit, allowed_mime=DEFAULT_ALLOWED_MIME, spool_dir=spool)

    assert refused.value.code == "payload_too_large"
    assert str(limit) in refused.value.detail and "256 KiB" in refused.value.detail
    assert [v.field for v in refused.value.violations] == ["file"]
    # 4 chunks make the limit, the 5th crosses it: nothing after that was asked for.
    assert upload.yielded == limit // upload.size + 1
    assert leftovers(spool) == []


async def test_one_byte_over_is_refused(spool: Path) -> None:
    upload = jpeg_with_everything()

    with pytest.raises(PayloadTooLarge):
        await intake(upload, spool, max_bytes=len(upload) - 1)
    assert leftovers(spool) == []


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("photo.jpg", b"not really")
    return out.getvalue()


@pytest.mark.parametrize(
    ("upload", "detected"),
    [
        (b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>", "text/html"),
        (b"  <html><img src=x onerror=alert(1)></html>", "text/html"),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>',
            "image/svg+xml",
        ),
        (b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "application/pdf"),
        (_zip(), "application/zip"),
        (b"#!/bin/sh\nrm -rf /\n", "text/x-script"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "image/heic"),
        (b"BM" + b"\x00" * 64, "image/bmp"),
        (b"just some bytes", "application/octet-stream"),
    ],
    ids=["html", "html-spaces", "svg", "pdf", "zip", "script", "heic", "bmp", "bytes"],
)
async def test_content_that_is_no_allowed_image_is_unsupported_media_type(
    spool: Path, upload: bytes, detected: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await intake(upload, spool)  # whatever name or Content-Type it came with

    assert refused.value.code == "unsupported_media_type"
    assert detected in refused.value.detail and "image/jpeg, image/png, image/webp" in refused.value.detail
    assert [v.field for v in refused.value.violations] == ["file"]
    assert leftovers(spool) == []


async def test_heic_refusal_says_why(spool: Path) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await intake(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, spool)
    assert "HEIC cannot be read here" in refused.value.detail


async def test_an_allowed_image_type_outside_the_allowlist_is_refused(spool: Path) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await intake(encoded(two_halves(), "PNG"), spool, allowed=frozenset({"image/jpeg"}))
    assert refused.value.code == "unsupported_media_type"
    assert "image/png" in refused.value.detail


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda jpeg: jpeg[: len(jpeg) // 2], id="truncated-jpeg"),
        pytest.param(lambda jpeg: jpeg[:200], id="jpeg-headers-only"),
        pytest.param(
            lambda jpeg: b"\xff\xd8\xff<html><script>alert(1)</script></html>", id="jpeg-magic-then-html"
        ),
    ],
)
async def test_a_truncated_or_corrupt_jpeg_is_invalid_image(spool: Path, damage: object) -> None:
    photo = jpeg_with_everything(image=Image.effect_noise((256, 256), 64).convert("RGB"))

    with pytest.raises(InvalidArgument) as refused:
        await intake(damage(photo), spool)  # type: ignore[operator]

    assert refused.value.code == "invalid_image"
    assert [v.field for v in refused.value.violations] == ["file"]
    assert "image/jpeg" in refused.value.detail
    assert leftovers(spool) == []


async def test_a_png_with_a_broken_checksum_is_invalid_image(spool: Path) -> None:
    upload = bytearray(encoded(Image.effect_noise((64, 64), 64), "PNG"))
    idat = upload.index(b"IDAT")
    upload[idat + 10] ^= 0xFF  # inside the compressed pixels: the chunk's CRC no longer matches

    with pytest.raises(InvalidArgument) as refused:
        await intake(bytes(upload), spool)

    assert refused.value.code == "invalid_image"
    assert leftovers(spool) == []


async def test_a_truncated_png_is_invalid_image(spool: Path) -> None:
    upload = encoded(Image.effect_noise((128, 128), 64), "PNG")

    with pytest.raises(InvalidArgument) as refused:
        await intake(upload[: len(upload) * 2 // 3], spool)

    assert refused.value.code == "invalid_image"


async def test_an_empty_upload_is_invalid_image(spool: Path) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await intake(b"", spool)
    assert refused.value.code == "invalid_image" and "empty" in refused.value.detail
    assert leftovers(spool) == []


@pytest.mark.parametrize(
    ("width", "height"),
    [(9_000, 9_000), (100_000, 100_000)],  # past our limit; past Pillow's own DecompressionBombError too
    ids=["81MP", "10GP"],
)
async def test_a_decompression_bomb_is_refused_before_decoding(spool: Path, width: int, height: int) -> None:
    upload = png_declaring(width, height)
    assert len(upload) < 200  # a few bytes that would decode to gigabytes

    with pytest.raises(InvalidArgument) as refused:
        await intake(upload, spool)

    assert refused.value.code == "image_too_large"  # a 4xx (422), never a 500
    assert "50000000 pixels" in refused.value.detail
    assert leftovers(spool) == []


async def test_the_pixel_limit_is_a_parameter(spool: Path) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await intake(encoded(two_halves(100, 100), "PNG"), spool, max_pixels=5_000)
    assert refused.value.code == "image_too_large" and "(100x100)" in refused.value.detail


async def test_a_cancelled_upload_leaves_nothing_behind(spool: Path) -> None:
    started = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield jpeg_with_everything()[:1000]
        started.set()
        await asyncio.sleep(3600)  # the client stops sending, then goes away
        yield b""

    task = asyncio.create_task(
        receive(stalls(), max_bytes=1024 * 1024, allowed_mime=DEFAULT_ALLOWED_MIME, spool_dir=spool)
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(spool) == []


def test_sniff_reads_the_magic_bytes_not_the_name() -> None:
    assert sniff(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff(b"\x89PNG\r\n\x1a\n") == "image/png"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "application/octet-stream"
    assert sniff(b"\xef\xbb\xbf<svg>") == "image/svg+xml"


@pytest.mark.parametrize(
    ("image", "fmt", "options"),
    [
        (Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", {}),  # print shops' JPEGs
        (Image.new("L", (16, 16), 128), "JPEG", {}),
        (Image.new("I;16", (16, 16), 40000), "PNG", {}),  # 16-bit greyscale
        (Image.new("LA", (16, 16), (128, 10)), "PNG", {}),
        (Image.new("1", (16, 16), 1), "PNG", {}),
        (Image.new("RGBA", (16, 16), (1, 2, 3, 4)), "WEBP", {"lossless": True}),
        (Image.new("RGBA", (16, 16), (1, 2, 3, 4)), "WEBP", {"quality": 50}),
    ],
    ids=[
        "jpeg-cmyk",
        "jpeg-grey",
        "png-16bit-grey",
        "png-grey-alpha",
        "png-1bit",
        "webp-alpha-lossless",
        "webp-alpha-lossy",
    ],
)
async def test_unusual_modes_are_stored_in_their_own_format(
    spool: Path, image: Image.Image, fmt: str, options: dict[str, object]
) -> None:
    result = await intake(encoded(image, fmt, **options), spool)

    with Image.open(result.path) as stored:
        assert stored.format == fmt and stored.size == (16, 16)
