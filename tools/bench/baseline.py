"""The baseline: the monolith the seed documents describe, reduced to the two operations the bench
compares. One FastAPI process (uvicorn, one worker like the gateway) that serves

    GET  /v1/admin/bookings/{id}        read one booking
    POST /v1/admin/bookings             create a booking
    GET  /v1/admin/queue/invoices       the invoices queue (status overdue, unpaid or all; limit, offset)

with the same SQL the booking and billing services run for them, straight against the same Postgres:
the same tables in schemas booking and billing, as the runtime role cws_app under the same row-level security (the org set
with set_config(..., true) in each transaction), through SQLAlchemy async + psycopg with a pool of
the same size and settings (libs.common.db.Database). It authenticates the same way as the gateway:
the same bearer access token verified locally with PyJWT and AUTH_SECRET_KEY
(libs.common.tokens.decode_access), revocations checked against an in-memory set, no database call.

What it leaves out is exactly what the suite's architecture adds: the gateway's edge middleware
(request id, metrics, access log, rate limit, body limit), the gRPC hop with its signed request
context, protobuf on both sides, and the domain's input validation (the create's insert has the
shape services/booking/bookings.py produces, without the checks that precede it).

Statement by statement, as services/booking does them after issue 15 (grpc_api.py GetBooking and
CreateBooking; keep the two in step when the suite's SQL changes):
  read:   set_config · SELECT booking with its workers (bookings.get_with_worker_ids: an array_agg
          subquery over schedule_blocks) · org profile (per-process cache for 60 s, else SELECT it)
  create: set_config · org profile (cached) · SELECT the org's entitlement FOR SHARE (paused?) ·
          SELECT active pricing · INSERT booking ON CONFLICT DO NOTHING RETURNING the row · INSERT event
          outbox with its pg_notify (one statement) · INSERT the admin audit row
The monolith audits an admin's write as the suite does, in its own transaction: where the suite raises
an event that IAM turns into iam.admin_audit_logs, the baseline inserts that row itself.
And as services/billing does the queue (grpc_invoices.py InvoiceQueue: invoices.py list_page with
oldest_due_first, then payments.py summaries over invoice_money; the statements as SQLAlchemy renders
them there, with its bound parameters):
  queue:  set_config · SELECT page of invoices (status IN ..., due date first, then id; LIMIT/OFFSET) ·
          SELECT count(*) of the same · SELECT the page's money (two LATERAL aggregates over payments
          and refunds, one query for the page)
The answer has the gateway's shape (gateway/routes/billing.py invoices_queue and invoice_view), the
roles are billing's (OWNER, ADMIN, FINANCE).
The outbox row is written already published and the notify goes to a channel nobody listens on, so
the suite's relay never publishes the baseline's events (the monolith has no relay to pay for).

Run by tools.bench: `python -m tools.bench.baseline` (DATABASE_URL, AUTH_SECRET_KEY, BASELINE_PORT).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import orjson
import uvicorn
from cws.booking.v1 import events_pb2
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import ORJSONResponse
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import AwareDatetime, BaseModel
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import ORG_SETTING, Database, service_metadata
from libs.common.settings import CommonSettings
from libs.common.tokens import AccessClaims, decode_access

STAFF = ("OWNER", "ADMIN", "DISPATCHER", "FINANCE", "VIEWER")
DISPATCH = ("OWNER", "ADMIN", "DISPATCHER")
FINANCE_STAFF = ("OWNER", "ADMIN", "FINANCE")
BOOKING_COLUMNS = (
    "id, org_id, lead_id, status, starts_at, ends_at, client_name, client_email, client_phone, address, "
    "postal_code, cleaning_type, beds, baths, total_before_tax_cents, currency, team_id, deposit_required, "
    "deposit_paid, notes, cancel_reason, idempotency_key, created_at, updated_at"
)

SET_ORG = text("SELECT set_config(:name, :org, true)")
PROFILE = text(
    "SELECT org_id, name, public_key, time_zone, currency, created_at FROM booking.org_profiles "
    "WHERE org_id = :org"
)
PRICING_ACTIVE = text(
    "SELECT id, org_id, version, currency, rules, min_total_cents, active, used, created_at "
    "FROM booking.pricing_configs WHERE active"
)
PRICING_USED = text("UPDATE booking.pricing_configs SET used = true WHERE id = :id")
BOOKING_WITH_WORKERS = text(
    f"SELECT {BOOKING_COLUMNS}, (SELECT array_agg(booking.schedule_blocks.worker_id) "
    "FROM booking.schedule_blocks WHERE booking.schedule_blocks.booking_id = booking.bookings.id "
    "AND booking.schedule_blocks.worker_id IS NOT NULL) AS assigned_worker_ids "
    "FROM booking.bookings WHERE booking.bookings.id = :id"
)
ENTITLEMENT = text("SELECT paused FROM booking.org_entitlements WHERE org_id = :org FOR SHARE")
INSERT_AUDIT = text(
    "INSERT INTO iam.admin_audit_logs (id, org_id, actor, role, auth_method, action, resource_type, "
    "resource_id, after, request_id) VALUES (:id, :org_id, :actor, :role, 'password', :action, "
    "'booking', :resource_id, CAST(:after AS jsonb), '')"
)
INSERT_BOOKING = text(
    "INSERT INTO booking.bookings (id, org_id, lead_id, starts_at, ends_at, client_name, client_email, "
    "client_phone, address, postal_code, cleaning_type, beds, baths, total_before_tax_cents, currency, "
    "deposit_required, notes, idempotency_key) VALUES (:id, :org_id, NULL, :starts_at, :ends_at, "
    ":client_name, :client_email, :client_phone, :address, :postal_code, :cleaning_type, :beds, :baths, "
    f":total, :currency, :deposit_required, :notes, NULL) ON CONFLICT DO NOTHING RETURNING {BOOKING_COLUMNS}"
)
# The outbox row and its notify in one statement, as libs/common/db.py UnitOfWork._flush_events.
INSERT_OUTBOX_AND_NOTIFY = text(
    "WITH written AS (INSERT INTO booking.event_outbox (id, subject, payload, org_id, request_id, "
    "created_at, published_at) VALUES (:id, :subject, :payload, :org_id, '', :created_at, :created_at)) "
    "SELECT pg_notify(:channel, '')"
)

# services/billing/invoices.py QUEUE_FILTERS, list_page (oldest_due_first) and payments.py
# summaries / invoice_money, as SQLAlchemy renders them for billing.
QUEUE_FILTERS = {
    "overdue": ("OVERDUE",),
    "unpaid": ("SENT", "PARTIAL"),
    "all": ("SENT", "PARTIAL", "OVERDUE"),
}
INVOICE_COLUMNS = (
    "id, org_id, number, status, currency, client_name, client_email, booking_id, issued_at, due_date, "
    "sent_at, subtotal_cents, taxable_subtotal_cents, tax_cents, tax_rate_basis, total_cents, created_at, "
    "updated_at"
)
QUALIFIED_INVOICE_COLUMNS = ", ".join(f"billing.invoices.{c}" for c in INVOICE_COLUMNS.split(", "))
QUEUE_PAGE = text(
    f"SELECT {QUALIFIED_INVOICE_COLUMNS} FROM billing.invoices WHERE billing.invoices.status IN :statuses "
    "ORDER BY billing.invoices.due_date ASC NULLS LAST, billing.invoices.id "
    "LIMIT CAST(:limit AS INTEGER) OFFSET CAST(:offset AS INTEGER)"
).bindparams(bindparam("statuses", expanding=True))
QUEUE_COUNT = text(
    "SELECT count(*) AS count_1 FROM billing.invoices WHERE billing.invoices.status IN :statuses"
).bindparams(bindparam("statuses", expanding=True))
INVOICE_MONEY = text(
    f"SELECT {', '.join(f'anon_1.{c}' for c in INVOICE_COLUMNS.split(', '))}, anon_1.paid_cents, "
    "anon_1.outstanding_cents, anon_1.succeeded_payments, anon_1.manual_payments, anon_1.stripe_payments, "
    "anon_1.last_payment_at FROM (SELECT "
    + ", ".join(f"billing.invoices.{c} AS {c}" for c in INVOICE_COLUMNS.split(", "))
    + ", pay.payments_cents - ref.cents AS paid_cents, "
    "CASE WHEN (billing.invoices.status IN :untouched) THEN CAST(:zero AS INTEGER) "
    "ELSE greatest(billing.invoices.total_cents - (pay.payments_cents - ref.cents), CAST(:zero AS INTEGER)) "
    "END AS outstanding_cents, pay.succeeded_payments AS succeeded_payments, "
    "pay.manual_payments AS manual_payments, pay.stripe_payments AS stripe_payments, "
    "pay.last_payment_at AS last_payment_at "
    "FROM billing.invoices JOIN LATERAL (SELECT "
    "count(*) FILTER (WHERE p.status = CAST(:succeeded AS VARCHAR)) AS succeeded_payments, "
    "count(*) FILTER (WHERE p.status = CAST(:succeeded AS VARCHAR) AND p.provider = CAST(:manual AS VARCHAR)) "
    "AS manual_payments, "
    "count(*) FILTER (WHERE p.status = CAST(:succeeded AS VARCHAR) AND p.provider = CAST(:stripe AS VARCHAR)) "
    "AS stripe_payments, "
    "coalesce(sum(p.amount_cents) FILTER (WHERE p.status = CAST(:succeeded AS VARCHAR)), CAST(:zero AS INTEGER)) "
    "AS payments_cents, max(p.received_at) FILTER (WHERE p.status = CAST(:succeeded AS VARCHAR)) "
    "AS last_payment_at FROM billing.invoice_payments AS p "
    "WHERE p.org_id = billing.invoices.org_id AND p.invoice_id = billing.invoices.id) AS pay ON true "
    "JOIN LATERAL (SELECT coalesce(sum(least(sp.amount_cents, (SELECT coalesce(sum(rf.amount_cents), "
    "CAST(:zero AS INTEGER)) AS coalesce_2 FROM billing.invoice_refunds AS rf "
    "WHERE rf.org_id = sp.org_id AND rf.invoice_id = sp.invoice_id AND rf.payment_intent_id = sp.provider_ref "
    "AND rf.status = CAST(:succeeded AS VARCHAR)))), CAST(:zero AS INTEGER)) AS cents "
    "FROM billing.invoice_payments AS sp WHERE sp.org_id = billing.invoices.org_id "
    "AND sp.invoice_id = billing.invoices.id AND sp.provider = CAST(:stripe AS VARCHAR) "
    "AND sp.status = CAST(:succeeded AS VARCHAR)) AS ref ON true) AS anon_1 WHERE anon_1.id IN :ids"
).bindparams(bindparam("untouched", expanding=True), bindparam("ids", expanding=True))
MONEY_PARAMS = {
    "untouched": ["DRAFT", "VOID"],
    "zero": 0,
    "succeeded": "succeeded",
    "manual": "manual",
    "stripe": "stripe",
}
NOTIFY_CHANNEL = "cws_bench_baseline"  # nobody listens: the suite's relay must not see these


class BookingIn(BaseModel):
    """The gateway's body, without its bounds (validation-free, as the issue asks)."""

    starts_at: AwareDatetime
    duration_minutes: int
    client_name: str = ""
    client_email: str = ""
    client_phone: str = ""
    address: str = ""
    postal_code: str = ""
    cleaning_type: str = ""
    beds: int = 0
    baths: float = 0
    notes: str = ""
    deposit_required: bool = False


class RevokedSessions:
    """The gateway's in-memory revocation set (fed by events there; empty here)."""

    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self._revoked


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def require_roles(*roles: str) -> Any:
    async def dependency(request: Request) -> AccessClaims:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("authentication required")
        try:
            claims = decode_access(token.strip(), request.app.state.secret)
        except (jwt.InvalidTokenError, ValueError, KeyError):
            raise _unauthorized("the access token is invalid or expired") from None
        if request.app.state.revoked.is_revoked(claims.session_id):
            raise _unauthorized("this session has been signed out")
        if claims.role not in roles:
            raise HTTPException(403, f"requires one of the roles {', '.join(roles)}")
        return claims

    return dependency


def _json_time(value: datetime) -> str:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp.ToJsonString()


def _local(value: datetime, time_zone: str) -> str:
    return value.astimezone(ZoneInfo(time_zone or "UTC")).isoformat()


def booking_json(row: Any, time_zone: str, worker_ids: list[str]) -> dict[str, Any]:
    """The gateway's response shape (gateway/routes/convert.py booking)."""
    return {
        "id": str(row.id),
        "lead_id": str(row.lead_id) if row.lead_id else None,
        "status": row.status,
        "starts_at": _json_time(row.starts_at),
        "ends_at": _json_time(row.ends_at),
        "time_zone": time_zone,
        "starts_at_local": _local(row.starts_at, time_zone),
        "ends_at_local": _local(row.ends_at, time_zone),
        "client_name": row.client_name,
        "client_email": row.client_email,
        "client_phone": row.client_phone,
        "address": row.address,
        "postal_code": row.postal_code,
        "cleaning_type": row.cleaning_type,
        "beds": row.beds,
        "baths": row.baths,
        "total_before_tax": round(row.total_before_tax_cents / 100, 2),
        "total_before_tax_cents": row.total_before_tax_cents,
        "currency": row.currency,
        "team_id": str(row.team_id) if row.team_id else None,
        "worker_ids": worker_ids,
        "deposit_required": row.deposit_required,
        "deposit_paid": row.deposit_paid,
        "notes": row.notes,
        "cancel_reason": row.cancel_reason or None,
        "created_at": _json_time(row.created_at),
    }


def _optional_time(value: datetime | None) -> str | None:
    return _json_time(value) if value is not None else None


def invoice_json(row: Any, money: Any) -> dict[str, Any]:
    """The gateway's invoice_view of a queue item (no items, payments or refunds in a list)."""
    return {
        "id": str(row.id),
        "number": row.number or None,
        "status": row.status,
        "currency": row.currency,
        "client_name": row.client_name,
        "client_email": row.client_email,
        "booking_id": str(row.booking_id) if row.booking_id else None,
        "issued_at": _optional_time(row.issued_at),
        "due_date": row.due_date.isoformat() if row.due_date else None,
        "sent_at": _optional_time(row.sent_at),
        "subtotal_cents": row.subtotal_cents,
        "taxable_subtotal_cents": row.taxable_subtotal_cents,
        "tax_cents": row.tax_cents,
        "tax_rate_basis": str(row.tax_rate_basis),
        "total_cents": row.total_cents,
        "paid_cents": int(money.paid_cents) if money else 0,
        "outstanding_cents": int(money.outstanding_cents) if money else 0,
        "items": [],
        "payments": [],
        "refunds": [],
        "created_at": _optional_time(row.created_at),
    }


class ProfileCache:
    """services/booking/orgs.py profile(): the org's profile from a short per-process cache, else
    one primary-key read (the suite creates missing profiles; the bench always calls it first)."""

    SECONDS = 60.0

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, Any]] = {}

    async def get(self, session: AsyncSession, org_id: str) -> Any:
        cached = self._cache.get(org_id)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        row = (await session.execute(PROFILE, {"org": org_id})).first()
        if row is None:
            raise HTTPException(503, "no org profile yet: let the suite serve this org once")
        self._cache[org_id] = (now + self.SECONDS, row)
        return row


def price_cents(rules: dict[str, Any], min_total: int, beds: int, baths: float, cleaning_type: str) -> int:
    """services/booking/pricing.py compute, the total only."""
    rule = rules.get(cleaning_type)
    if rule is None:
        raise HTTPException(422, "unknown cleaning_type")
    total = rule["base_cents"] + beds * rule["per_bed_cents"] + round(baths * rule["per_bath_cents"])
    return max(total, min_total)


def create_app() -> FastAPI:
    url = os.environ["DATABASE_URL"]
    # The suite's pool settings and defaults (libs/common/settings.py), as the honest baseline asks.
    pool_size = int(
        os.environ.get("DATABASE_POOL_SIZE") or CommonSettings.model_fields["database_pool_size"].default
    )
    max_overflow = int(
        os.environ.get("DATABASE_MAX_OVERFLOW")
        or CommonSettings.model_fields["database_max_overflow"].default
    )
    statement_timeout_ms = int(os.environ.get("DATABASE_STATEMENT_TIMEOUT_MS", "5000"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _, tables = service_metadata("booking")
        app.state.db = Database(
            url,
            schema="booking",
            tables=tables,
            pool_size=pool_size,
            max_overflow=max_overflow,
            statement_timeout_ms=statement_timeout_ms,
        )
        try:
            yield
        finally:
            await app.state.db.dispose()

    app = FastAPI(title="bench baseline", lifespan=lifespan, default_response_class=ORJSONResponse)
    app.state.secret = os.environ["AUTH_SECRET_KEY"]
    app.state.revoked = RevokedSessions()
    profiles = ProfileCache()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/admin/bookings/{booking_id}")
    async def get_booking(
        booking_id: str, request: Request, claims: AccessClaims = Depends(require_roles(*STAFF))
    ) -> dict[str, Any]:
        try:
            key = uuid.UUID(booking_id)
        except ValueError:
            raise HTTPException(422, "booking_id must be a UUID") from None
        db: Database = request.app.state.db
        async with db.sessions() as session, session.begin():
            await session.execute(SET_ORG, {"name": ORG_SETTING, "org": claims.org_id})
            row = (await session.execute(BOOKING_WITH_WORKERS, {"id": key})).first()
            if row is None:
                raise HTTPException(404, "booking not found")
            profile = await profiles.get(session, claims.org_id)
        return booking_json(row, profile.time_zone, [str(w) for w in row.assigned_worker_ids or ()])

    @app.get("/v1/admin/queue/invoices")
    async def invoices_queue(
        request: Request,
        status: str = "all",
        limit: int = 50,
        offset: int = 0,
        claims: AccessClaims = Depends(require_roles(*FINANCE_STAFF)),
    ) -> dict[str, Any]:
        statuses = QUEUE_FILTERS.get(status)
        if statuses is None or not 1 <= limit <= 200 or offset < 0:
            raise HTTPException(422, "status must be overdue, unpaid or all; limit 1-200; offset >= 0")
        db: Database = request.app.state.db
        async with db.sessions() as session, session.begin():
            await session.execute(SET_ORG, {"name": ORG_SETTING, "org": claims.org_id})
            params = {"statuses": list(statuses), "limit": limit, "offset": offset}
            rows = (await session.execute(QUEUE_PAGE, params)).all()
            total = (await session.execute(QUEUE_COUNT, {"statuses": list(statuses)})).scalar_one()
            money = {}
            if rows:
                ids = list(dict.fromkeys(r.id for r in rows))
                found = await session.execute(INVOICE_MONEY, {**MONEY_PARAMS, "ids": ids})
                money = {r.id: r for r in found}
        return {
            "status": status,
            "total": int(total),
            "items": [invoice_json(row, money.get(row.id)) for row in rows],
        }

    @app.post("/v1/admin/bookings", status_code=201)
    async def create_booking(
        body: BookingIn, request: Request, claims: AccessClaims = Depends(require_roles(*DISPATCH))
    ) -> ORJSONResponse:
        db: Database = request.app.state.db
        ends_at = body.starts_at + timedelta(minutes=body.duration_minutes)
        booking_id = uuid.uuid4()
        async with db.sessions() as session, session.begin():
            await session.execute(SET_ORG, {"name": ORG_SETTING, "org": claims.org_id})
            profile = await profiles.get(session, claims.org_id)
            if (await session.execute(ENTITLEMENT, {"org": claims.org_id})).scalar_one_or_none():
                raise HTTPException(409, "subscription paused")
            config = (await session.execute(PRICING_ACTIVE)).one()
            total = price_cents(
                config.rules, config.min_total_cents, body.beds, body.baths, body.cleaning_type
            )
            if not config.used:
                await session.execute(PRICING_USED, {"id": config.id})
            row = (
                await session.execute(
                    INSERT_BOOKING,
                    {
                        "id": booking_id,
                        "org_id": claims.org_id,
                        "starts_at": body.starts_at,
                        "ends_at": ends_at,
                        "client_name": body.client_name,
                        "client_email": body.client_email,
                        "client_phone": body.client_phone,
                        "address": body.address,
                        "postal_code": body.postal_code,
                        "cleaning_type": body.cleaning_type,
                        "beds": body.beds,
                        "baths": body.baths,
                        "total": total,
                        "currency": config.currency,
                        "deposit_required": body.deposit_required,
                        "notes": body.notes,
                    },
                )
            ).one()
            event = events_pb2.BookingChanged(
                org_id=str(row.org_id),
                booking_id=str(row.id),
                status=row.status,
                client_email=row.client_email,
            )
            event.starts_at.FromDatetime(row.starts_at.astimezone(UTC))
            event.ends_at.FromDatetime(row.ends_at.astimezone(UTC))
            await session.execute(
                INSERT_OUTBOX_AND_NOTIFY,
                {
                    "id": uuid.uuid4(),
                    "subject": "cws.booking.booking.created",
                    "payload": event.SerializeToString(),
                    "org_id": row.org_id,
                    "created_at": datetime.now(UTC),
                    "channel": NOTIFY_CHANNEL,
                },
            )
            await session.execute(
                INSERT_AUDIT,
                {
                    "id": uuid.uuid4(),
                    "org_id": row.org_id,
                    "actor": claims.user_id,
                    "role": claims.role,
                    "action": "booking.create",
                    "resource_id": str(row.id),
                    "after": orjson.dumps(
                        {"status": row.status, "starts_at": _json_time(row.starts_at)}
                    ).decode(),
                },
            )
        return ORJSONResponse(booking_json(row, profile.time_zone, []), status_code=201)

    return app


def main() -> None:
    uvicorn.run(
        "tools.bench.baseline:create_app",
        factory=True,
        host="127.0.0.1",
        port=int(os.environ.get("BASELINE_PORT", "8900")),
        workers=1,
        log_level=os.environ.get("LOG_LEVEL", "warning").lower(),
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
