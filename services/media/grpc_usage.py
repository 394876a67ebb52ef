"""The stored-bytes part of the media servicer: GetStorageUsage, the truth billing's usage report
compares its `storage_bytes` counter (counted from media's photo events) with (usage.py)."""

from __future__ import annotations

import grpc
from cws.media.v1 import media_pb2

from libs.common import context as request_context
from libs.common.db import Database, unit_of_work
from services.media import usage


class UsageApi:
    db: Database

    async def GetStorageUsage(
        self, request: media_pb2.GetStorageUsageRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.GetStorageUsageResponse:
        """Billing's usage report, in the org billing acts for: a suite service only, never a user
        (as booking's CountUsage): what an org stores is finance's business, asked through billing."""
        request_context.require_service()
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await usage.storage_usage(uow)
        return media_pb2.GetStorageUsageResponse(stored_bytes=found.stored_bytes, photos=found.photos)
