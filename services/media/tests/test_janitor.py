"""The storage janitor against the real suite (media with the local backend under the session's work
dir): a deleted photo's object is removed from disk by the `storage-janitor` job (seed 004's
`python -m services.jobs.run --job storage-janitor --once`, reporting complete) and its tombstone with
it; with the backend failing, the tombstone stays with attempts, last_error and a backoff, the
retry-queue gauge counts it, and a run after recovery deletes the object. Only suite services may run
the janitor; the backoff doubles and is capped."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
from cws.media.v1 import media_pb2, media_pb2_grpc

from conftest import jobs_env
from gateway.tests.test_photo_routes import jpeg_bytes, upload
from gateway.tests.test_subscription_routes import create_booking
from services.media.janitor import Backoff
from tools.devstack import ROOT
from tools.testkit import as_role, as_service, owner, rpc_error, signing_channel, sql


async def deleted_photo(gateway: Any, http: httpx.AsyncClient, make_org: Any, stack: Any) -> tuple[str, Path]:
    """A photo uploaded and deleted through the gateway: its id and the file still on disk."""
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    booking = await create_booking(http, gateway.url, headers)
    response = await upload(http, gateway.url, headers, booking["id"], jpeg_bytes())
    assert response.status_code == 201, response.text
    photo_id = response.json()["photo_id"]
    stored = Path(stack.work_dir) / "uploads" / "orders" / org.org_id / booking["id"] / f"{photo_id}.jpg"
    gone = await http.delete(f"{gateway.url}/v1/admin/photos/{photo_id}", headers=headers)
    assert gone.status_code == 204, gone.text
    assert stored.is_file()
    return photo_id, stored


async def tombstone(stack: Any, photo_id: str) -> tuple[Any, ...] | None:
    # Superuser URL: reading media's rows behind its back, across orgs.
    rows = await sql(
        stack.admin_url,
        "SELECT attempts, last_error, next_attempt_at - now() FROM media.photo_tombstones WHERE photo_id = %s",
        (uuid.UUID(photo_id),),
    )
    return rows[0] if rows else None


async def run_janitor(media: Any) -> media_pb2.RunStorageJanitorResponse:
    async with signing_channel(media.target) as channel:
        return await media_pb2_grpc.MediaServiceStub(channel).RunStorageJanitor(
            media_pb2.RunStorageJanitorRequest(), metadata=as_service("", "jobs"), timeout=30
        )


async def run_job_once(stack: Any, iam: Any, booking: Any, notify: Any, media: Any) -> dict[str, Any]:
    """Seed 004's command, as a subprocess with media's target: its job_complete event."""
    env = {
        **os.environ,
        **jobs_env(stack, iam, booking, notify, media=media),
        "JOB_RUNNER_ID": f"test-janitor-{uuid.uuid4().hex[:8]}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.jobs.run",
        "--job",
        "storage-janitor",
        "--once",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    text = output.decode()
    assert process.returncode == 0, text
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    [done] = [e for e in events if e.get("event") == "job_complete" and e.get("name") == "storage-janitor"]
    return done


async def test_the_job_deletes_a_tombstoned_object_and_reports_complete(
    gateway: Any,
    http: httpx.AsyncClient,
    make_org: Any,
    stack: Any,
    iam: Any,
    booking: Any,
    notify: Any,
    media: Any,
) -> None:
    photo_id, stored = await deleted_photo(gateway, http, make_org, stack)

    done = await run_job_once(stack, iam, booking, notify, media)

    assert done["outcome"] == "ok", done
    assert done["detail"]["deleted"] >= 1 and done["detail"]["failed"] == 0, done
    assert not stored.exists()
    assert await tombstone(stack, photo_id) is None
    # Nothing left to do: a second run deletes nothing and fails nothing.
    again = await run_janitor(media)
    assert (again.deleted, again.failed) == (0, 0)


async def test_a_failing_backend_keeps_the_tombstone_with_backoff_until_it_recovers(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, stack: Any, media: Any
) -> None:
    photo_id, stored = await deleted_photo(gateway, http, make_org, stack)
    # The disk refuses the delete: the booking's directory is replaced by a plain file, so unlinking
    # the key fails (NotADirectoryError) as a broken mount would.
    folder = stored.parent
    aside = folder.with_name(folder.name + ".aside")
    folder.rename(aside)
    folder.write_bytes(b"not a directory")
    try:
        first = await run_janitor(media)
        assert first.failed >= 1 and first.retrying >= 1, first
        attempts, last_error, wait = await tombstone(stack, photo_id) or (None, None, None)
        assert attempts == 1 and "NotADirectoryError" in last_error, last_error
        assert timedelta(seconds=50) < wait <= timedelta(seconds=60), wait  # STORAGE_JANITOR_BACKOFF_SECONDS

        # Not due yet: a run right away leaves it alone (no attempt spent).
        await run_janitor(media)
        assert (await tombstone(stack, photo_id) or (None,))[0] == 1

        # The gauge counts it (set by the run; the background refresh reads the same count).
        metrics = (await http.get(f"http://127.0.0.1:{media.http_port}/metrics")).text
        [line] = [x for x in metrics.splitlines() if x.startswith("media_storage_delete_retry_queue ")]
        assert float(line.split()[1]) >= 1, line

        # Due again (the clock moved), still failing: attempts 2, the backoff doubled.
        await sql(
            stack.admin_url,
            "UPDATE media.photo_tombstones SET next_attempt_at = now() WHERE photo_id = %s",
            (uuid.UUID(photo_id),),
        )
        await run_janitor(media)
        attempts, _, wait = await tombstone(stack, photo_id) or (None, None, None)
        assert attempts == 2 and timedelta(seconds=110) < wait <= timedelta(seconds=120), (attempts, wait)
    finally:
        folder.unlink()
        aside.rename(folder)

    # Recovered: the next due run deletes the object and the tombstone.
    assert stored.is_file()
    await sql(
        stack.admin_url,
        "UPDATE media.photo_tombstones SET next_attempt_at = now() WHERE photo_id = %s",
        (uuid.UUID(photo_id),),
    )
    recovered = await run_janitor(media)
    assert recovered.deleted >= 1, recovered
    assert not stored.exists()
    assert await tombstone(stack, photo_id) is None


async def test_only_suite_services_run_the_janitor(media: Any, make_org: Any) -> None:
    org = await make_org()
    async with signing_channel(media.target) as channel:
        stub = media_pb2_grpc.MediaServiceStub(channel)
        await rpc_error(
            stub.RunStorageJanitor(
                media_pb2.RunStorageJanitorRequest(), metadata=as_role(org.org_id, "OWNER"), timeout=10
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )


def test_the_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(base_seconds=60, max_seconds=3600)
    assert [backoff.after(n).total_seconds() for n in (1, 2, 3, 4, 7, 50)] == [60, 120, 240, 480, 3600, 3600]


async def test_photo_deletion_is_kept_across_a_missing_object(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, stack: Any, media: Any
) -> None:
    """An object already gone (deleted by hand, or a run that died after deleting it) is a success:
    the delete is idempotent, the tombstone goes."""
    photo_id, stored = await deleted_photo(gateway, http, make_org, stack)
    stored.unlink()
    await run_janitor(media)
    assert await tombstone(stack, photo_id) is None
    shutil.rmtree(stored.parent, ignore_errors=True)
