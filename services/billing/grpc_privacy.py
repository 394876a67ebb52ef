"""Billing's PrivacyService: export (OWNER or ADMIN) and erase (suite services: the jobs service drives
the deletion requests) what billing holds about a person. The work is in personal_data.py."""

from __future__ import annotations

import grpc
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc

from libs.common import context as request_context
from libs.common.db import Database
from libs.common.logs import get_logger
from libs.common.roles import MANAGERS
from services.billing import personal_data
from services.billing.stripe_api import StripeApi

log = get_logger(__name__)


class BillingPrivacyServicer(privacy_pb2_grpc.PrivacyServiceServicer):
    def __init__(self, db: Database, stripe: StripeApi | None) -> None:
        self.db = db
        self.stripe = stripe

    async def ExportPerson(
        self, request: privacy_pb2.ExportPersonRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.ExportPersonResponse:
        request_context.require_role(*MANAGERS)
        sections = await personal_data.export(self.db, request_context.current_org_id(), request.person)
        response = privacy_pb2.ExportPersonResponse()
        response.sections.update(sections)
        return response

    async def ErasePerson(
        self, request: privacy_pb2.ErasePersonRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.ErasePersonResponse:
        request_context.require_service()
        erased = await personal_data.erase(
            self.db, request_context.current_org_id(), request.person, self.stripe
        )
        log.info(
            "person_erased",
            request_id=request.request_id,
            changed=erased.changed,
            invoices=len(erased.invoice_ids),
            pending=bool(erased.pending_reason),
        )
        return privacy_pb2.ErasePersonResponse(
            changed=erased.changed, pending_reason=erased.pending_reason, invoice_ids=erased.invoice_ids
        )
