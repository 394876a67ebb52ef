"""The worker portal (issue 16), sized for a phone: the jobs of the signed-in worker, one job with
Start / Complete and a photo upload taken with the phone's camera, the worker's own uploads, sign-out.

A worker signs in with the link a dispatcher mints (POST /v1/admin/workers/{id}/portal-link answers
`/worker/login/callback?token=…`; the console hands it out prefixed with `/portal`). As for clients,
opening the link uses nothing; the page's button does. The gateway confines every call to the
worker's own assigned jobs (404 for any other), which the pages show as the web's own 404."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from web.api import ApiError, SignInRequired, gateway_of
from web.pages import read_form, redirect, render, session_of
from web.routes.client_portal import confirm_link, link_page, names_no_such_object, sign_out

router = APIRouter(prefix="/portal/worker")

# The web holds an upload in memory on its way to the gateway: past this it is refused here. The
# gateway's own limit (ORDER_PHOTO_MAX_BYTES, 10 MiB by default) is the one that normally answers.
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
READ_CHUNK = 1024 * 1024
# The form around the file (boundaries, part headers, the CSRF field).
ENVELOPE_BYTES = 64 * 1024
# What the gateway's refusals of an upload mean to a person holding a phone.
UPLOAD_PROBLEMS = {
    413: "That photo is too large. Take it again at a lower resolution, or choose a smaller one.",
    415: "That file is not a photo we accept. Choose a JPEG, PNG or WebP picture.",
}
ACTIONS = {"start": "Job started.", "complete": "Job completed. Thank you!"}


async def api(request: Request, method: str, path: str, **kwargs: Any) -> Any:
    """A worker-portal call; another worker's job, or a malformed id, is the web's 404."""
    try:
        return await gateway_of(request).call(request, method, path, auth="worker", **kwargs)
    except ApiError as error:
        if names_no_such_object(error, method):
            raise HTTPException(404) from None
        raise


def _job_path(job_id: str) -> str:
    return f"/v1/worker/portal/jobs/{quote(job_id, safe='')}"


def _photos_path(job_id: str) -> str:
    return f"/v1/worker/portal/bookings/{quote(job_id, safe='')}/photos"


def _local_day(job: dict[str, Any]) -> str:
    try:
        moment = datetime.fromisoformat(str(job.get("starts_at", "")).replace("Z", "+00:00"))
        return moment.astimezone(ZoneInfo(job.get("time_zone") or "UTC")).date().isoformat()
    except (ValueError, KeyError):
        return ""


def _today_in(job: dict[str, Any]) -> str:
    try:
        return datetime.now(UTC).astimezone(ZoneInfo(job.get("time_zone") or "UTC")).date().isoformat()
    except (ValueError, KeyError):
        return datetime.now(UTC).date().isoformat()


@router.get("/", response_class=HTMLResponse)
async def jobs(request: Request) -> HTMLResponse:
    # The sign-in page of workers is this one (a worker has only their link): no session, no call,
    # else an expired session would redirect here forever.
    if not session_of(request).get("worker"):
        return render(request, "worker_welcome.html")
    listed = await api(request, "GET", "/v1/worker/portal/jobs", params={"limit": 100})
    found = sorted(listed.get("jobs") or [], key=lambda j: str(j.get("starts_at") or ""))
    active = [j for j in found if j.get("status") not in ("cancelled",)]
    today = [j for j in active if _local_day(j) <= _today_in(j) or j.get("status") == "in_progress"]
    later = [j for j in active if j not in today]
    return render(request, "worker_jobs.html", today=today, later=later)


@router.get("", include_in_schema=False)
async def jobs_without_slash() -> RedirectResponse:
    return RedirectResponse("/portal/worker/", status_code=307)


@router.get("/login/callback", response_class=HTMLResponse)
async def worker_link(request: Request, token: str = "") -> HTMLResponse:
    return await link_page(request, "worker", token)


@router.post("/login/confirm", response_model=None)
async def worker_confirm(request: Request) -> Response:
    return await confirm_link(request, "worker")


@router.post("/sign-out")
async def worker_sign_out(request: Request) -> RedirectResponse:
    await sign_out(request, "worker")
    return redirect("/portal/worker/")


async def _job_page(request: Request, job_id: str, status: int = 200, **context: Any) -> HTMLResponse:
    job = await api(request, "GET", _job_path(job_id))
    photos = await api(request, "GET", _photos_path(job_id))
    return render(
        request, "worker_job.html", status=status, job=job, photos=photos.get("items") or [], **context
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job(request: Request, job_id: str) -> HTMLResponse:
    return await _job_page(request, job_id)


async def _transition(request: Request, job_id: str, action: str) -> Response:
    await read_form(request)
    try:
        await api(request, "POST", f"{_job_path(job_id)}/{action}")
    except ApiError as error:
        if error.status == 409:  # already started, not confirmed yet, …: say so on the job's page
            return await _job_page(request, job_id, status=409, problem=error)
        raise
    session_of(request).flash(ACTIONS[action])
    return redirect(f"/portal/worker/jobs/{quote(job_id, safe='')}")


@router.post("/jobs/{job_id}/start", response_model=None)
async def start(request: Request, job_id: str) -> Response:
    return await _transition(request, job_id, "start")


@router.post("/jobs/{job_id}/complete", response_model=None)
async def complete(request: Request, job_id: str) -> Response:
    return await _transition(request, job_id, "complete")


async def _read_upload(upload: UploadFile) -> bytes | None:
    """The file's bytes, or None when it is past MAX_UPLOAD_BYTES (read in chunks, never all at once)."""
    parts: list[bytes] = []
    size = 0
    while chunk := await upload.read(READ_CHUNK):
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            return None
        parts.append(chunk)
    return b"".join(parts)


@router.post("/jobs/{job_id}/photos", response_model=None)
async def upload_photo(request: Request, job_id: str) -> Response:
    # Starlette spools a posted file to disk before the CSRF token (a form field) can be checked, and
    # bounds no file's size: only a signed-in worker's post of a declared, bounded size is read at all.
    if not session_of(request).get("worker"):
        raise SignInRequired("worker")
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        return await _job_page(request, job_id, status=411, upload_error="Your browser sent no file size.")
    if int(length) > MAX_UPLOAD_BYTES + ENVELOPE_BYTES:
        return await _job_page(request, job_id, status=413, upload_error=UPLOAD_PROBLEMS[413])
    form = await read_form(request)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return await _job_page(request, job_id, status=422, upload_error="Take or choose a photo first.")
    data = await _read_upload(upload)
    if data is None:
        return await _job_page(request, job_id, status=413, upload_error=UPLOAD_PROBLEMS[413])
    if not data:
        return await _job_page(request, job_id, status=422, upload_error="That file is empty.")
    content_type = upload.content_type or "application/octet-stream"
    files = {"file": (upload.filename[-200:], data, content_type)}
    try:
        await api(request, "POST", _photos_path(job_id), files=files)
    except ApiError as error:
        if error.status in (413, 415, 422, 409):
            message = UPLOAD_PROBLEMS.get(error.status) or error.detail
            return await _job_page(request, job_id, status=error.status, upload_error=message)
        raise
    session_of(request).flash("Photo uploaded. Thank you!")
    return redirect(f"/portal/worker/jobs/{quote(job_id, safe='')}")
