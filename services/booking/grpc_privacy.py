"""Booking's PrivacyService (seed 002's data export/delete playbook, issue 13): what booking holds
about a person, and booking's erasure step. Proto in, domain call (erasure.py), proto out."""

from __future__ import annotations

import grpc
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc
from google.protobuf import struct_pb2

from libs.common import context as request_context
from libs.common.db import Database, unit_of_work
from libs.common.logs import get_logger
from libs.common.roles import MANAGERS
from services.booking import erasure

log = get_logger(__name__)


class PrivacyServicer(privacy_pb2_grpc.PrivacyServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ExportPerson(
        self, request: privacy_pb2.ExportPersonRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.ExportPersonResponse:
        request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            sections = await erasure.export(uow, request.person)
        found = struct_pb2.Struct()
        found.update(sections)
        return privacy_pb2.ExportPersonResponse(sections=found)

    async def ErasePerson(
        self, request: privacy_pb2.ErasePersonRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.ErasePersonResponse:
        request_context.require_service()
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            erased = await erasure.erase(uow, request.person)
        log.info(
            "person_erased",
            deletion_request=request.request_id,
            changed=erased.changed,
            pending=erased.pending_reason,
        )
        return privacy_pb2.ErasePersonResponse(changed=erased.changed, pending_reason=erased.pending_reason)
