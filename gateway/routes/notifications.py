"""/v1/admin/email-scan, /v1/admin/retention/cleanup and the notification digests' settings.

The scheduler's endpoints of seed 004 (Basic Auth works as for any admin route): email-scan answers
202 with the reminder counts, retention cleanup 200 with the rows deleted across services and the
data deletion requests worked on (the jobs service runs it, as its retention job does). Writes
are blocked by ADMIN_READ_ONLY in the middleware like every /v1/admin write."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from cws.jobs.v1 import jobs_pb2
from cws.notify.v1 import notify_pb2
from fastapi import APIRouter, Depends, Path
from fastapi.responses import ORJSONResponse
from pydantic import Field

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.principal import Principal
from gateway.routes.convert import optional_time
from gateway.schemas import Email, Strict
from gateway.stubs import Jobs, Notify
from libs.common.roles import MANAGERS, STAFF

router = APIRouter(prefix="/v1/admin", tags=["notifications"], dependencies=[ADMIN])

DigestKey = Annotated[
    str, Path(pattern=r"^[a-z0-9_-]{1,100}$", description="1 to 100 characters of a-z, 0-9, _ and -")
]


class EmailScanIn(Strict):
    window_hours: Annotated[int, Field(ge=1, le=744)] | None = None


class DigestIn(Strict):
    enabled: bool = True
    schedule: Literal["daily", "weekly", "monthly"]
    recipients: Annotated[list[Email], Field(max_length=50)] = []


class ModuleIn(Strict):
    enabled: bool


def digest_view(message: notify_pb2.DigestSetting) -> dict[str, Any]:
    return {
        "digest_key": message.digest_key,
        "enabled": message.enabled,
        "schedule": message.schedule,
        "recipients": list(message.recipients),
        "updated_at": optional_time(message, "updated_at"),
    }


@router.post(
    "/email-scan",
    status_code=202,
    summary="Enqueue reminders for upcoming confirmed bookings; answers the counts",
)
async def email_scan(
    notify: Notify,
    body: EmailScanIn | None = None,
    principal: Principal = Depends(require_roles(*MANAGERS)),
) -> ORJSONResponse:
    window = body.window_hours if body and body.window_hours else 0
    response = await notify.ScanReminders(notify_pb2.ScanRemindersRequest(window_hours=window))
    return ORJSONResponse(
        {
            "scanned": response.scanned,
            "enqueued": response.enqueued,
            "duplicates": response.duplicates,
            "skipped_no_email": response.skipped_no_email,
        },
        status_code=202,
    )


# Erasing pending deletion requests calls every service in turn, so a run may take longer than one
# call's usual deadline; a service that is down fails its step quickly and is retried next run.
RETENTION_CLEANUP_TIMEOUT_SECONDS = 120.0


@router.post(
    "/retention/cleanup",
    summary="Delete data past its RETENTION_* age in every service and work on pending data deletion "
    'requests (seed 002 playbook): {"deleted": n, "deletion_requests_processed": n, ...}',
)
async def retention_cleanup(
    jobs: Jobs, principal: Principal = Depends(require_roles(*MANAGERS))
) -> dict[str, int]:
    # The jobs service runs the same cleanup as its retention job, for the caller's org: the ages
    # in each service, then every pending deletion request's steps (issue 13).
    response = await jobs.RunRetentionCleanup(
        jobs_pb2.RunRetentionCleanupRequest(), timeout=RETENTION_CLEANUP_TIMEOUT_SECONDS
    )
    return {
        "deleted": response.deleted,
        "deletion_requests_processed": response.deletion_requests_processed,
        "deletion_requests_completed": response.deletion_requests_completed,
        "deletion_steps_failed": response.deletion_steps_failed,
    }


@router.get("/notifications/digests", summary="The org's digests and whether the notifications module is on")
async def get_digests(
    notify: Notify, principal: Principal = Depends(require_roles(*STAFF))
) -> dict[str, Any]:
    response = await notify.GetDigestSettings(notify_pb2.GetDigestSettingsRequest())
    return {
        "module_enabled": response.module_enabled,
        "digests": [digest_view(d) for d in response.digests],
    }


@router.put("/notifications/digests/{digest_key}", summary="Create or change one digest")
async def put_digest(
    digest_key: DigestKey,
    body: DigestIn,
    notify: Notify,
    principal: Principal = Depends(require_roles(*MANAGERS)),
) -> dict[str, Any]:
    response = await notify.UpdateDigestSetting(
        notify_pb2.UpdateDigestSettingRequest(
            digest=notify_pb2.DigestSetting(
                digest_key=digest_key,
                enabled=body.enabled,
                schedule=body.schedule,
                recipients=body.recipients,
            )
        )
    )
    return digest_view(response.digest)


@router.put("/notifications/module", summary="Turn the notifications module (digests) on or off")
async def put_module(
    body: ModuleIn, notify: Notify, principal: Principal = Depends(require_roles(*MANAGERS))
) -> dict[str, bool]:
    response = await notify.SetNotificationsModule(
        notify_pb2.SetNotificationsModuleRequest(enabled=body.enabled)
    )
    return {"module_enabled": response.module_enabled}
