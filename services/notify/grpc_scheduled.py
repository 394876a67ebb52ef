"""The notify servicer's scheduled-work part: reminders, digests and their settings.

Mixed into NotifyServicer (which provides db, settings, delivery and peers). The scheduled RPCs are
called by the gateway for an admin, or by the jobs service with a service context (role ADMIN)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cws.notify.v1 import notify_pb2
from sqlalchemy import Row

from libs.common import context as request_context
from libs.common.convert import to_ts
from libs.common.db import unit_of_work
from libs.common.roles import MANAGERS, STAFF
from services.notify import digests, reminders

if TYPE_CHECKING:
    from libs.common.db import Database
    from services.notify.peers import Peers
    from services.notify.settings import NotifySettings


def digest_proto(row: Row[Any]) -> notify_pb2.DigestSetting:
    return notify_pb2.DigestSetting(
        digest_key=row.digest_key,
        enabled=row.enabled,
        schedule=row.schedule,
        recipients=list(row.recipients),
        updated_at=to_ts(row.updated_at),
    )


class ScheduledApi:
    db: Database
    settings: NotifySettings
    peers: Peers

    async def ScanReminders(
        self, request: notify_pb2.ScanRemindersRequest, context: Any
    ) -> notify_pb2.ScanRemindersResponse:
        request_context.require_role(*MANAGERS)
        result = await reminders.scan(
            self.db,
            self.peers,
            request_context.current_org_id(),
            window_hours=request.window_hours or self.settings.email_reminder_window_hours,
        )
        return notify_pb2.ScanRemindersResponse(
            scanned=result.scanned,
            enqueued=result.enqueued,
            duplicates=result.duplicates,
            skipped_no_email=result.skipped_no_email,
        )

    async def RunDigests(
        self, request: notify_pb2.RunDigestsRequest, context: Any
    ) -> notify_pb2.RunDigestsResponse:
        request_context.require_role(*MANAGERS)
        result = await digests.run(self.db, self.peers, request_context.current_org_id(), request.schedule)
        return notify_pb2.RunDigestsResponse(
            sent=result.sent, already_sent=result.already_sent, module_enabled=result.module_enabled
        )

    async def GetDigestSettings(
        self, request: notify_pb2.GetDigestSettingsRequest, context: Any
    ) -> notify_pb2.GetDigestSettingsResponse:
        request_context.require_role(*STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            enabled = await digests.module_enabled(uow)
            rows = await digests.list_settings(uow)
        return notify_pb2.GetDigestSettingsResponse(
            module_enabled=enabled, digests=[digest_proto(row) for row in rows]
        )

    async def UpdateDigestSetting(
        self, request: notify_pb2.UpdateDigestSettingRequest, context: Any
    ) -> notify_pb2.UpdateDigestSettingResponse:
        request_context.require_role(*MANAGERS)
        wanted = request.digest
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await digests.update_setting(
                uow,
                digest_key=wanted.digest_key,
                enabled=wanted.enabled,
                schedule=wanted.schedule,
                recipients=list(wanted.recipients),
            )
        return notify_pb2.UpdateDigestSettingResponse(digest=digest_proto(row))

    async def SetNotificationsModule(
        self, request: notify_pb2.SetNotificationsModuleRequest, context: Any
    ) -> notify_pb2.SetNotificationsModuleResponse:
        request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            enabled = await digests.set_module(uow, request.enabled)
        return notify_pb2.SetNotificationsModuleResponse(module_enabled=enabled)
