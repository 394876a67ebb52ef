"""Local backend: files under ORDER_UPLOAD_ROOT (the default; `make dev`, single-host installs).

Writes are atomic (a temp file in the target directory, fsync, os.replace, fsync of the directory), so a
reader or a crash never sees half a photo. Every key is checked (`check_key`) and its path must resolve
inside the root with no symlink on the way, so no key can read or overwrite a file elsewhere. File I/O
runs in threads so a slow disk does not stall the event loop.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from services.media.storage.base import CHUNK_SIZE
from services.media.storage.errors import InvalidStorageKey, StorageNotFound
from services.media.storage.keys import check_key
from services.media.storage.threads import run

TEMP_PREFIX = ".upload-"


class LocalStorage:
    name = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        """The file for `key`, refusing anything that would land outside the root."""
        check_key(key)
        path = self.root / key
        # The root is resolved and the key's segments are plain names, so any difference between the
        # path and its resolved form is a symlink somewhere below the root: refuse it, whatever it
        # points at (inside or out), rather than reason about where it leads.
        resolved = path.resolve()
        if resolved != path or not resolved.is_relative_to(self.root):
            raise InvalidStorageKey("storage key resolves outside the upload root")
        return path

    async def put(self, key: str, source: Path | bytes, content_type: str) -> str:
        """Returns `key`: on this backend the key is the object's reference."""
        path = self.path_for(key)
        await run(_write_atomically, path, source)
        return key

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        try:
            await run(path.unlink, True)
        except IsADirectoryError:
            return  # a legacy prefix, not an object: nothing of ours to delete

    async def exists(self, key: str) -> bool:
        path = self.path_for(key)
        return await run(path.is_file)

    async def delivery_url(self, key: str, ttl_seconds: int, variant: str | None = None) -> str | None:
        self.path_for(key)
        return None  # no URL of its own: the service streams `open(key)` behind its own signed token

    async def open(self, key: str) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        try:
            handle: BinaryIO = await run(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise StorageNotFound(key) from None
        try:
            while chunk := await run(handle.read, CHUNK_SIZE):
                yield chunk
        finally:
            await run(handle.close)

    async def aclose(self) -> None:
        return None


def _write_atomically(path: Path, source: Path | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as out:
            if isinstance(source, bytes | bytearray | memoryview):
                out.write(source)
            else:
                with open(source, "rb") as src:
                    while chunk := src.read(CHUNK_SIZE):
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp_name, 0o640)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    # The rename is durable only once the directory entry is on disk too.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
