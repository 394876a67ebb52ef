"""QuickBooks Online: the company's name for the connection, and qbo-sync's pass (`qbo_pass`), over the
Accounting REST API v3 with plain httpx (`{QUICKBOOKS_API_URL}/v3/company/{realm}/...`, JSON).

A pass, for one org and its company (the grant's realm):
1. Push. The org's invoices changed since the cursor (less QBO_SYNC_BACKFILL_DAYS; the first pass:
   the last QBO_SYNC_INITIAL_DAYS), oldest change first, from billing (ListInvoices.updated_since):
   - issued ones (SENT, PARTIAL, PAID, OVERDUE) become QuickBooks invoices: the customer matched by
     email, then by display name, else created; one line per item; each line's tax code is the company's
     code whose sales rates add up to the item's rate, and TxnTaxDetail.TotalTax is the invoice's
     snapshot tax (never recomputed here; GlobalTaxCalculation TaxExcluded). An item rate no code has
     skips that invoice with a clear error (counts["invoices_skipped"], PassResult.error); the pass
     goes on. DocNumber is our invoice number and PrivateNote names our invoice id.
   - an invoice already pushed is sent again only when what would be sent changed (pushed_hash), as a
     sparse update with its SyncToken (a stale token is re-read once);
   - a VOID invoice that was pushed is voided in QuickBooks; drafts are never pushed.
   - then the invoice's payments recorded in the suite (Stripe card payments, manual payments:
     every succeeded one whose provider is not "quickbooks") that are not in QuickBooks yet become
     QuickBooks Payments: CustomerRef, TotalAmt = the payment's amount, TxnDate = its received date
     (UTC), one line linked to the QuickBooks invoice, PrivateNote "CleanWithSnapshot payment <our
     payment id> (...)"; a qbo_payments row "pushed" (with our payment id) records each, so it is
     sent once. A payment QuickBooks refuses is reported (payments_not_pushed, PassResult.error)
     and the cursor held, so it is tried again. Refunds are not sent: each succeeded refund of a
     pushed invoice is reported (refunds_not_pushed, the error) on the passes that read the invoice,
     for the accountant to record in QuickBooks; a pushed payment is never changed afterwards.
   Never twice: each create carries a `requestid` derived from our ids (QuickBooks answers a repeated
   create with its first result), and before creating, the invoice's DocNumber is looked up: one that
   names our invoice id is adopted. A pass killed between QuickBooks' answer and our mapping row
   therefore finds its invoice on the rerun instead of making a second one; customers likewise;
   payments are looked up by customer and date and adopted by the payment id in their PrivateNote.
2. Pull. Payments changed in QuickBooks since the same time (MetaData.LastUpdatedTime, paged with
   STARTPOSITION/MAXRESULTS), each line linked to an invoice we pushed: billing RecordExternalPayment
   with provider_ref `qbo:{realm}:{payment id}:{invoice id}` (billing applies it once, recomputes the
   status and audits it), then a qbo_payments row (applied, or skipped with billing's reason: an amount
   above the balance due, a void invoice, another currency). A (payment, invoice) with a row is never
   sent again; a later edit of that payment in QuickBooks is not applied (the suite records money once).
   The suite's own payments (a "pushed" row, or our PrivateNote) are never applied back.
3. The cursor is the pass's start time, or the last change of the oldest invoice the pass had to skip
   (so it is tried again on every pass until it goes up, instead of falling behind the window). A
   pass that fails keeps the old cursor (the runner), and the backfill overlap re-reads the edge, so
   nothing is lost.

Failures: 429 → waited for when its Retry-After is at most INTEGRATIONS_MAX_RETRY_AFTER_SECONDS (a few
times), else RateLimited; 401 → one token refresh per pass (ctx.refresh_grant) and the call again;
5xx, timeouts, connection errors → ProviderUnavailable; 403 → OAuthRefused (the user lost access to the
company: reconnect). A 400 (Intuit's ValidationFault) is that invoice's error, not the pass's."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import grpc
import httpx
from cws.billing.v1 import billing_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.db import unit_of_work
from libs.common.errors import Unavailable
from libs.common.grpc_client import peer_answers
from libs.common.logs import get_logger
from services.integrations.models import qbo_customers, qbo_invoices, qbo_payments
from services.integrations.oauth import OAuthRefused, ProviderUnavailable, RateLimited, retry_after_seconds
from services.integrations.settings import IntegrationsSettings
from services.integrations.sync_types import Grant, PassResult, SyncContext

log = get_logger(__name__)

MINOR_VERSION = "75"
# Payments per query page (QuickBooks allows up to 1000); a test may lower it through ctx.extra.
PAYMENT_PAGE = 100
LIST_PAGE = 1000  # tax codes and rates: a company has a handful
INVOICE_PAGE = 200  # billing's ListInvoices maximum
MAX_THROTTLE_WAITS = 5
PUSHED_STATUSES = frozenset({"SENT", "PARTIAL", "PAID", "OVERDUE"})
VOIDED = "void"
HASH_VERSION = "v1"
# requestid and adoption: QuickBooks keeps our ids, derived so a rerun sends the same ones.
ID_NAMESPACE = uuid.UUID("8f4c2a56-53f0-4a0d-9d7c-0b1f1b0c9e11")
MAX_ERRORS_SHOWN = 3
# The suite's own payments in QuickBooks: PrivateNote "CleanWithSnapshot payment <our payment id> (...)".
PAYMENT_NOTE = "CleanWithSnapshot payment"
PAYMENT_MARK = re.compile(
    re.escape(PAYMENT_NOTE)
    + r" ([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
)
QUICKBOOKS_PROVIDER = "quickbooks"  # billing's provider of the payments pulled from QuickBooks


class QboError(Exception):
    """A 4xx answer other than auth and throttling: Intuit's Fault (code, message, detail)."""

    def __init__(self, status: int, code: str, message: str, detail: str) -> None:
        super().__init__(
            f"{message} ({code}): {detail}" if detail and detail != message else f"{message} ({code})"
        )
        self.status, self.code, self.message, self.detail = status, code, message, detail


@dataclass
class QboClient:
    """One company's API for one pass: the bearer token, one refresh on a 401, 429 waits."""

    http: httpx.AsyncClient
    settings: IntegrationsSettings
    grant: Grant
    refresh_grant: Callable[[], Awaitable[Grant]] | None = None
    refreshed: bool = False
    calls: int = 0

    @property
    def realm(self) -> str:
        return self.grant.account_id

    def url(self, path: str) -> str:
        base = self.settings.quickbooks_api_url.rstrip("/")
        return f"{base}/v3/company/{self.realm}/{path}"

    async def call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> dict[str, Any]:
        throttled = 0
        while True:
            self.calls += 1
            try:
                response = await self.http.request(
                    method,
                    self.url(path),
                    params={**(params or {}), "minorversion": MINOR_VERSION},
                    json=body,
                    headers={
                        "Authorization": f"Bearer {self.grant.access_token}",
                        "Accept": "application/json",
                    },
                )
            except (httpx.TimeoutException, httpx.TransportError) as error:
                raise ProviderUnavailable(f"QuickBooks {path}: {type(error).__name__}") from None
            status = response.status_code
            if status == 429:
                wait = retry_after_seconds(response.headers)
                throttled += 1
                if (
                    wait > self.settings.integrations_max_retry_after_seconds
                    or throttled > MAX_THROTTLE_WAITS
                ):
                    raise RateLimited(wait, f"QuickBooks asked to wait {wait:g} s")
                log.info("qbo_throttled", realm=self.realm, retry_after=wait)
                await asyncio.sleep(wait)
                continue
            if status == 401:
                if self.refresh_grant is None or self.refreshed:
                    raise ProviderUnavailable("QuickBooks refused the access token (HTTP 401)")
                self.refreshed = True
                self.grant = await self.refresh_grant()
                continue
            if status == 403:
                raise OAuthRefused(
                    "access_denied",
                    f"QuickBooks refused access to company {self.realm}; reconnect QuickBooks",
                )
            if status >= 500:
                raise ProviderUnavailable(f"QuickBooks {path}: HTTP {status}")
            if status >= 400:
                raise _fault(response)
            try:
                answer: dict[str, Any] = response.json()
            except ValueError:
                raise ProviderUnavailable(f"QuickBooks {path}: an answer that is not JSON") from None
            return answer

    async def query(self, statement: str) -> dict[str, Any]:
        answer = await self.call("GET", "query", params={"query": statement})
        found: dict[str, Any] = answer.get("QueryResponse") or {}
        return found

    async def query_pages(
        self, select_from: str, page_size: int, *, entity: str
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The rows of `SELECT * FROM <select_from>`, a page at a time (STARTPOSITION is 1-based)."""
        start = 1
        while True:
            found = await self.query(f"{select_from} STARTPOSITION {start} MAXRESULTS {page_size}")
            rows: list[dict[str, Any]] = found.get(entity) or []
            if rows:
                yield rows
            if len(rows) < page_size:
                return
            start += len(rows)

    async def query_all(
        self, select_from: str, page_size: int, *, entity: str
    ) -> AsyncIterator[dict[str, Any]]:
        async for rows in self.query_pages(select_from, page_size, entity=entity):
            for row in rows:
                yield row

    async def create(self, entity: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        answer = await self.call("POST", entity.lower(), params={"requestid": request_id}, body=body)
        created: dict[str, Any] = answer[entity]
        return created


def _fault(response: httpx.Response) -> QboError:
    try:
        errors = response.json()["Fault"]["Error"]
        first = errors[0]
        return QboError(
            response.status_code,
            str(first.get("code", "")),
            str(first.get("Message", "")),
            str(first.get("Detail", "")),
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return QboError(response.status_code, "", f"HTTP {response.status_code}", response.text[:200])


def _http(settings: IntegrationsSettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=settings.integrations_http_timeout_seconds)


async def company_name(grant: Grant, settings: IntegrationsSettings) -> str:
    """The company's name (CompanyInfo.CompanyName) for the connection's account_name."""
    async with _http(settings) as http:
        client = QboClient(http, settings, grant)
        answer = await client.call("GET", f"companyinfo/{grant.account_id}")
    info = answer.get("CompanyInfo") or {}
    return str(info.get("CompanyName") or info.get("LegalName") or "")


def quote(value: str) -> str:
    """A string literal of Intuit's query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def since_of(ctx: SyncContext) -> datetime:
    """Where this pass reads from: the cursor less the backfill overlap, or the initial window."""
    settings = ctx.settings
    if ctx.state.cursor:
        try:
            cursor = datetime.fromisoformat(ctx.state.cursor)
        except ValueError:
            cursor = None
        if cursor is not None:
            cursor = cursor if cursor.tzinfo else cursor.replace(tzinfo=UTC)
            return cursor - timedelta(days=settings.qbo_sync_backfill_days)
    return ctx.now - timedelta(days=settings.qbo_sync_initial_days)


# --- tax codes -----------------------------------------------------------------------------------


@dataclass
class TaxCodes:
    """The company's active sales tax codes by their total rate (percent)."""

    by_rate: dict[Decimal, list[tuple[str, str]]] = field(default_factory=dict)

    def code_for(self, rate: Decimal) -> tuple[str, str] | None:
        """(id, name) of the code whose sales rates add up to `rate`; the lowest id when several do."""
        found = self.by_rate.get(rate.normalize())
        return found[0] if found else None

    def rates(self) -> str:
        return ", ".join(f"{r:f} %" for r in sorted(self.by_rate)) or "none"


async def load_tax_codes(client: QboClient) -> TaxCodes:
    rates: dict[str, Decimal] = {}
    async for rate in client.query_all("SELECT * FROM TaxRate", LIST_PAGE, entity="TaxRate"):
        try:
            rates[str(rate["Id"])] = Decimal(str(rate.get("RateValue", 0)))
        except (InvalidOperation, KeyError):
            continue
    codes = TaxCodes()
    async for code in client.query_all("SELECT * FROM TaxCode", LIST_PAGE, entity="TaxCode"):
        # TAX and NON are a US company's pseudo codes: no rates to match a snapshot against.
        if code.get("Active") is False or not code.get("TaxGroup", False):
            continue
        details = (code.get("SalesTaxRateList") or {}).get("TaxRateDetail") or []
        refs = [str(d.get("TaxRateRef", {}).get("value", "")) for d in details]
        if not refs or any(r not in rates for r in refs):
            continue
        total = sum((rates[r] for r in refs), Decimal(0)).normalize()
        codes.by_rate.setdefault(total, []).append((str(code["Id"]), str(code.get("Name", ""))))
    for found in codes.by_rate.values():
        found.sort(key=lambda c: (not c[0].isdigit(), int(c[0]) if c[0].isdigit() else 0, c[0]))
    return codes


# --- the pass -------------------------------------------------------------------------------------


@dataclass
class Pass:
    ctx: SyncContext
    client: QboClient
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    # The oldest change of an invoice this pass could not push: the cursor stays there (see `skip`).
    held: datetime | None = None

    @property
    def realm(self) -> str:
        return self.client.realm

    def skip(self, invoice: billing_pb2.Invoice, why: str) -> None:
        """The invoice is not pushed now, with a reason the page shows. The cursor is held at its last
        change, so every later pass tries it again (e.g. once the tax code exists in QuickBooks)
        instead of leaving it behind the backfill window."""
        self.counts["invoices_skipped"] += 1
        self.problem(f"invoice {invoice.number}: {why}")
        self.hold(invoice)

    def hold(self, invoice: billing_pb2.Invoice) -> None:
        """The cursor stays at the invoice's last change: every later pass reads it again."""
        if invoice.HasField("updated_at"):
            changed = invoice.updated_at.ToDatetime(tzinfo=UTC)
            self.held = changed if self.held is None else min(self.held, changed)

    def problem(self, text: str) -> None:
        self.errors.append(text)
        self.counts["errors"] += 1
        log.warning("qbo_sync_problem", org_id=str(self.ctx.org_id), realm=self.realm, problem=text)

    def request_id(self, *parts: str) -> str:
        return str(uuid.uuid5(ID_NAMESPACE, ":".join([str(self.ctx.org_id), self.realm, *parts])))


async def qbo_pass(ctx: SyncContext) -> PassResult:
    since = since_of(ctx)
    async with _http(ctx.settings) as http:
        client = QboClient(http, ctx.settings, ctx.grant, ctx.refresh_grant)
        run = Pass(ctx, client)
        await push_invoices(run, since)
        await pull_payments(run, since)
    shown = "; ".join(run.errors[:MAX_ERRORS_SHOWN])
    if len(run.errors) > MAX_ERRORS_SHOWN:
        shown += f" (and {len(run.errors) - MAX_ERRORS_SHOWN} more)"
    cursor = ctx.now if run.held is None else min(ctx.now, run.held)
    return PassResult(cursor=cursor.isoformat(), counts=dict(run.counts), error=shown[:1000])


# --- push ----------------------------------------------------------------------------------------


async def changed_invoices(ctx: SyncContext, since: datetime) -> AsyncIterator[billing_pb2.Invoice]:
    stamp = Timestamp()
    stamp.FromDatetime(since.astimezone(UTC).replace(tzinfo=None))
    offset = 0
    while True:
        with ctx.peers.acting(ctx.org_id), peer_answers("billing"):
            page = await ctx.peers.billing.stub.ListInvoices(
                billing_pb2.ListInvoicesRequest(updated_since=stamp, limit=INVOICE_PAGE, offset=offset)
            )
        for invoice in page.invoices:
            yield invoice
        offset += len(page.invoices)
        if len(page.invoices) < INVOICE_PAGE or offset >= page.total:
            return


async def push_invoices(run: Pass, since: datetime) -> None:
    taxes: TaxCodes | None = None
    async for invoice in changed_invoices(run.ctx, since):
        if invoice.status not in PUSHED_STATUSES and invoice.status != "VOID":
            continue
        mapped = await _mapping(run, uuid.UUID(invoice.id))
        if invoice.status == "VOID":
            if mapped is not None and mapped.pushed_hash != VOIDED:
                await _void(run, invoice, mapped)
            continue
        if taxes is None:
            taxes = await load_tax_codes(run.client)
        try:
            customer_id = await _push(run, invoice, mapped, taxes)
        except QboError as refused:
            run.skip(invoice, f"QuickBooks refused it: {refused}")
            continue
        if customer_id is not None:
            await push_payments(run, invoice, customer_id)


@dataclass(frozen=True)
class Mapped:
    qbo_invoice_id: str
    sync_token: str
    pushed_hash: str


async def _mapping(run: Pass, invoice_id: uuid.UUID) -> Mapped | None:
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        row = (
            await uow.session.execute(
                select(qbo_invoices).where(
                    qbo_invoices.c.org_id == run.ctx.org_id,
                    qbo_invoices.c.realm_id == run.realm,
                    qbo_invoices.c.invoice_id == invoice_id,
                )
            )
        ).first()
    return Mapped(row.qbo_invoice_id, row.sync_token, row.pushed_hash) if row is not None else None


async def _store_mapping(run: Pass, invoice_id: str, qbo_invoice: dict[str, Any], pushed_hash: str) -> None:
    values = {
        "org_id": run.ctx.org_id,
        "realm_id": run.realm,
        "invoice_id": uuid.UUID(invoice_id),
        "qbo_invoice_id": str(qbo_invoice["Id"]),
        "sync_token": str(qbo_invoice.get("SyncToken", "")),
        "pushed_hash": pushed_hash,
        "updated_at": datetime.now(UTC),
    }
    statement = pg_insert(qbo_invoices).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[qbo_invoices.c.org_id, qbo_invoices.c.realm_id, qbo_invoices.c.invoice_id],
        set_={
            k: statement.excluded[k] for k in ("qbo_invoice_id", "sync_token", "pushed_hash", "updated_at")
        },
    )
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        await uow.session.execute(statement)


def _cents(cents: int) -> float | int:
    value = Decimal(cents) / 100
    return int(value) if value == value.to_integral_value() else float(value)


def invoice_body(
    invoice: billing_pb2.Invoice, customer_id: str, taxes: TaxCodes
) -> tuple[dict[str, Any] | None, str]:
    """What QuickBooks is sent for the invoice, or (None, why) when an item's rate has no tax code."""
    lines: list[dict[str, Any]] = []
    for item in invoice.items:
        try:
            rate = Decimal(item.tax_rate or "0")
        except InvalidOperation:
            return None, f"item {item.description!r} has the tax rate {item.tax_rate!r}"
        code = taxes.code_for(rate)
        if code is None:
            return None, (
                f"no QuickBooks tax code has a {rate.normalize():f} % sales rate (the company's codes:"
                f" {taxes.rates()}); add one in QuickBooks and the next sync pushes the invoice"
            )
        quantity = Decimal(item.quantity or "1")
        lines.append(
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": _cents(item.amount_cents),
                "Description": item.description,
                "SalesItemLineDetail": {
                    "Qty": int(quantity) if quantity == quantity.to_integral_value() else float(quantity),
                    "UnitPrice": _cents(item.unit_price_cents),
                    "TaxCodeRef": {"value": code[0], "name": code[1]},
                },
            }
        )
    if not lines:
        return None, "the invoice has no items"
    issued = invoice.issued_at.ToDatetime(tzinfo=UTC).date() if invoice.HasField("issued_at") else None
    body: dict[str, Any] = {
        "CustomerRef": {"value": customer_id},
        "DocNumber": invoice.number,
        "Line": lines,
        "CurrencyRef": {"value": invoice.currency},
        "GlobalTaxCalculation": "TaxExcluded",
        # The invoice's tax snapshot, as issued: QuickBooks keeps it instead of computing its own.
        "TxnTaxDetail": {"TotalTax": _cents(invoice.tax_cents)},
        "PrivateNote": f"CleanWithSnapshot invoice {invoice.id}",
    }
    if issued is not None:
        body["TxnDate"] = issued.isoformat()
    if invoice.due_date:
        body["DueDate"] = invoice.due_date
    if invoice.client_email:
        body["BillEmail"] = {"Address": invoice.client_email}
    return body, ""


def pushed_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return f"{HASH_VERSION}:{hashlib.sha256(canonical.encode()).hexdigest()}"


async def _push(
    run: Pass, invoice: billing_pb2.Invoice, mapped: Mapped | None, taxes: TaxCodes
) -> str | None:
    """The invoice in QuickBooks as billing has it; the QuickBooks customer's id, or None when the
    invoice was skipped (then its payments are not pushed either)."""
    # The tax codes first: an invoice QuickBooks cannot take creates no customer either.
    probe, why = invoice_body(invoice, "", taxes)
    if probe is None:
        run.skip(invoice, f"not pushed: {why}")
        return None
    customer_id = await _customer(run, invoice)
    body, _ = invoice_body(invoice, customer_id, taxes)
    assert body is not None
    wanted = pushed_hash(body)
    if mapped is not None and mapped.pushed_hash == wanted:
        run.counts["invoices_unchanged"] += 1
        return customer_id
    if mapped is None:
        adopted = await _existing(run, invoice)
        if adopted is not None:
            mapped = Mapped(str(adopted["Id"]), str(adopted.get("SyncToken", "")), "")
            run.counts["invoices_adopted"] += 1
            if _same_as_sent(adopted, body):
                await _store_mapping(run, invoice.id, adopted, wanted)
                return customer_id
    if mapped is None:
        created = await run.client.create("Invoice", body, run.request_id("invoice", invoice.id, wanted))
        await _store_mapping(run, invoice.id, created, wanted)
        run.counts["invoices_created"] += 1
        return customer_id
    updated = await _update(run, mapped, body)
    await _store_mapping(run, invoice.id, updated, wanted)
    run.counts["invoices_updated"] += 1
    return customer_id


def _same_as_sent(found: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether an invoice QuickBooks holds (adopted after a crash) already says what we would send."""
    sent_lines = [line for line in found.get("Line", []) if line.get("DetailType") == "SalesItemLineDetail"]
    try:
        return (
            str(found.get("CustomerRef", {}).get("value")) == body["CustomerRef"]["value"]
            and [Decimal(str(x["Amount"])) for x in sent_lines]
            == [Decimal(str(x["Amount"])) for x in body["Line"]]
            and Decimal(str(found.get("TxnTaxDetail", {}).get("TotalTax", 0)))
            == Decimal(str(body["TxnTaxDetail"]["TotalTax"]))
        )
    except (InvalidOperation, KeyError, TypeError):
        return False


async def _existing(run: Pass, invoice: billing_pb2.Invoice) -> dict[str, Any] | None:
    """A QuickBooks invoice with our number that names our invoice (a create whose answer was lost).
    One with our number that does not is the accountant's: a clear error, never overwritten."""
    found = await run.client.query(f"SELECT * FROM Invoice WHERE DocNumber = {quote(invoice.number)}")
    for candidate in found.get("Invoice") or []:
        if invoice.id in str(candidate.get("PrivateNote", "")):
            return dict(candidate)
    if found.get("Invoice"):
        raise QboError(
            400,
            "6140",
            "Duplicate Document Number Error",
            f"QuickBooks already has an invoice numbered {invoice.number} that this suite did not create",
        )
    return None


async def _update(run: Pass, mapped: Mapped, body: dict[str, Any]) -> dict[str, Any]:
    token = mapped.sync_token
    for attempt in range(2):
        try:
            answer = await run.client.call(
                "POST",
                "invoice",
                body={**body, "Id": mapped.qbo_invoice_id, "SyncToken": token, "sparse": True},
            )
            updated: dict[str, Any] = answer["Invoice"]
            return updated
        except QboError as refused:
            if refused.code != "5010" or attempt:
                raise
            token = await _current_sync_token(run, mapped.qbo_invoice_id)
    raise AssertionError("unreachable")


async def _current_sync_token(run: Pass, qbo_invoice_id: str) -> str:
    answer = await run.client.call("GET", f"invoice/{qbo_invoice_id}")
    return str(answer["Invoice"]["SyncToken"])


async def _void(run: Pass, invoice: billing_pb2.Invoice, mapped: Mapped) -> None:
    token = mapped.sync_token
    for attempt in range(2):
        try:
            answer = await run.client.call(
                "POST",
                "invoice",
                params={"operation": "void"},
                body={"Id": mapped.qbo_invoice_id, "SyncToken": token, "sparse": True},
            )
        except QboError as refused:
            if refused.code == "5010" and not attempt:
                token = await _current_sync_token(run, mapped.qbo_invoice_id)
                continue
            run.skip(invoice, f"voided here, but QuickBooks refused the void: {refused}")
            return
        await _store_mapping(run, invoice.id, answer["Invoice"], VOIDED)
        run.counts["invoices_voided"] += 1
        return


# --- the suite's payments ------------------------------------------------------------------------


async def push_payments(run: Pass, invoice: billing_pb2.Invoice, customer_id: str) -> None:
    """The invoice's succeeded payments recorded in the suite (Stripe, manual; not the ones pulled from
    QuickBooks) that are not in QuickBooks yet become QuickBooks payments linked to its invoice, each
    once. Refunds are not sent: each succeeded one is reported (refunds_not_pushed, the pass's error)
    for the accountant to record in QuickBooks."""
    mapped = await _mapping(run, uuid.UUID(invoice.id))
    if mapped is None or mapped.pushed_hash == VOIDED:
        return
    with run.ctx.peers.acting(run.ctx.org_id), peer_answers("billing"):
        found = await run.ctx.peers.billing.stub.GetInvoice(
            billing_pb2.GetInvoiceRequest(invoice_id=invoice.id)
        )
    full = found.invoice
    for refund in full.refunds:
        if refund.status == "succeeded":
            run.counts["refunds_not_pushed"] += 1
            run.problem(
                f"invoice {full.number}: a refund of {_cents(refund.amount_cents)} {full.currency}"
                " is not sent to QuickBooks (refunds are not synced); record it there"
            )
    ours = [p for p in full.payments if p.status == "succeeded" and p.provider != QUICKBOOKS_PROVIDER]
    if not ours:
        return
    done = await _pushed_payment_ids(run, [uuid.UUID(p.id) for p in ours])
    for payment in ours:
        if uuid.UUID(payment.id) in done:
            continue
        try:
            await _push_payment(run, full, payment, mapped.qbo_invoice_id, customer_id)
        except QboError as refused:
            # Tried again on every pass (the cursor is held) until QuickBooks takes it.
            run.counts["payments_not_pushed"] += 1
            run.problem(
                f"invoice {full.number}: its {payment.provider} payment of"
                f" {_cents(payment.amount_cents)} {payment.currency} was not sent to QuickBooks,"
                f" which refused it: {refused}"
            )
            run.hold(invoice)


def payment_note(payment: billing_pb2.Payment) -> str:
    """PrivateNote of a payment we create: names our payment, so the pull never applies it back and a
    rerun finds it (PAYMENT_MARK)."""
    how = f"{payment.provider} {payment.method}".strip()
    ref = payment.provider_ref if payment.provider == "stripe" else payment.reference
    return f"{PAYMENT_NOTE} {payment.id} ({how}{', ' + ref if ref else ''})"[:4000]


def our_payment_id(qbo_payment: dict[str, Any]) -> uuid.UUID | None:
    """Our payment's id when the QuickBooks payment is one this suite created (its PrivateNote)."""
    found = PAYMENT_MARK.search(str(qbo_payment.get("PrivateNote", "")))
    return uuid.UUID(found.group(1)) if found else None


def payment_body(
    invoice: billing_pb2.Invoice, payment: billing_pb2.Payment, qbo_invoice_id: str, customer_id: str
) -> dict[str, Any]:
    received = (
        payment.received_at.ToDatetime(tzinfo=UTC) if payment.HasField("received_at") else datetime.now(UTC)
    )
    amount = _cents(payment.amount_cents)
    return {
        "CustomerRef": {"value": customer_id},
        "TotalAmt": amount,
        "CurrencyRef": {"value": payment.currency or invoice.currency},
        "TxnDate": received.date().isoformat(),
        "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": qbo_invoice_id, "TxnType": "Invoice"}]}],
        "PrivateNote": payment_note(payment),
    }


async def _push_payment(
    run: Pass,
    invoice: billing_pb2.Invoice,
    payment: billing_pb2.Payment,
    qbo_invoice_id: str,
    customer_id: str,
) -> None:
    body = payment_body(invoice, payment, qbo_invoice_id, customer_id)
    # A create whose answer was lost (the pass killed, a timeout): the payment is there, adopt it.
    existing = await _existing_payment(run, payment, customer_id, str(body["TxnDate"]))
    if existing is not None:
        run.counts["payments_adopted"] += 1
        qbo_payment = existing
    else:
        qbo_payment = await run.client.create("Payment", body, run.request_id("payment", payment.id))
        run.counts["payments_pushed"] += 1
    await _store_pushed(run, qbo_payment, uuid.UUID(invoice.id), uuid.UUID(payment.id), payment.amount_cents)


async def _existing_payment(
    run: Pass, payment: billing_pb2.Payment, customer_id: str, txn_date: str
) -> dict[str, Any] | None:
    found = await run.client.query(
        f"SELECT * FROM Payment WHERE CustomerRef = {quote(customer_id)} AND TxnDate = {quote(txn_date)}"
        f" STARTPOSITION 1 MAXRESULTS {LIST_PAGE}"
    )
    for candidate in found.get("Payment") or []:
        if our_payment_id(candidate) == uuid.UUID(payment.id):
            return dict(candidate)
    return None


async def _pushed_payment_ids(run: Pass, payment_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        rows = await uow.session.execute(
            select(qbo_payments.c.payment_id).where(
                qbo_payments.c.org_id == run.ctx.org_id,
                qbo_payments.c.realm_id == run.realm,
                qbo_payments.c.payment_id.in_(payment_ids),
            )
        )
        return {r for (r,) in rows}


async def _store_pushed(
    run: Pass, qbo_payment: dict[str, Any], invoice_id: uuid.UUID, payment_id: uuid.UUID, cents: int
) -> None:
    statement = pg_insert(qbo_payments).values(
        org_id=run.ctx.org_id,
        realm_id=run.realm,
        qbo_payment_id=str(qbo_payment["Id"]),
        invoice_id=invoice_id,
        amount_cents=cents,
        outcome="pushed",
        payment_id=payment_id,
    )
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        await uow.session.execute(statement.on_conflict_do_nothing())


# --- customers -----------------------------------------------------------------------------------


def email_key(invoice: billing_pb2.Invoice) -> str:
    email = invoice.client_email.strip().lower()
    return email or f"name:{invoice.client_name.strip().lower()}"


async def _customer(run: Pass, invoice: billing_pb2.Invoice) -> str:
    key = email_key(invoice)
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        known = (
            await uow.session.execute(
                select(qbo_customers.c.customer_id).where(
                    qbo_customers.c.org_id == run.ctx.org_id,
                    qbo_customers.c.realm_id == run.realm,
                    qbo_customers.c.email_key == key,
                )
            )
        ).scalar_one_or_none()
    if known is not None:
        return str(known)
    customer_id = await _find_customer(run, invoice)
    if customer_id is None:
        customer_id = await _create_customer(run, invoice, key)
        run.counts["customers_created"] += 1
    else:
        run.counts["customers_matched"] += 1
    statement = pg_insert(qbo_customers).values(
        org_id=run.ctx.org_id, realm_id=run.realm, email_key=key, customer_id=customer_id
    )
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        await uow.session.execute(
            statement.on_conflict_do_update(
                index_elements=[qbo_customers.c.org_id, qbo_customers.c.realm_id, qbo_customers.c.email_key],
                set_={"customer_id": statement.excluded.customer_id},
            )
        )
    return customer_id


async def _find_customer(run: Pass, invoice: billing_pb2.Invoice) -> str | None:
    """The company's customer with the client's email; else one with the client's name and no other
    email (a namesake with another address is someone else)."""
    email = invoice.client_email.strip()
    if email:
        found = await run.client.query(f"SELECT * FROM Customer WHERE PrimaryEmailAddr = {quote(email)}")
        for customer in found.get("Customer") or []:
            if customer.get("Active", True):
                return str(customer["Id"])
    name = invoice.client_name.strip()
    if name:
        found = await run.client.query(f"SELECT * FROM Customer WHERE DisplayName = {quote(name)}")
        for customer in found.get("Customer") or []:
            theirs = str((customer.get("PrimaryEmailAddr") or {}).get("Address", "")).strip().lower()
            if not theirs or theirs == email.lower():
                return str(customer["Id"])
    return None


async def _create_customer(run: Pass, invoice: billing_pb2.Invoice, key: str) -> str:
    name = invoice.client_name.strip() or invoice.client_email.strip() or "Client"
    email = invoice.client_email.strip()
    # A namesake with another email holds the plain name (display names are unique): add the email.
    for display in dict.fromkeys([name, f"{name} ({email})" if email else f"{name} ({invoice.number})"]):
        body: dict[str, Any] = {"DisplayName": display[:100]}
        if email:
            body["PrimaryEmailAddr"] = {"Address": email}
        try:
            created = await run.client.create("Customer", body, run.request_id("customer", key, display))
            return str(created["Id"])
        except QboError as refused:
            if refused.code != "6240":
                raise
    raise QboError(400, "6240", "Duplicate Name Exists Error", f"no free display name for {name!r}")


# --- pull ----------------------------------------------------------------------------------------


def _time_literal(at: datetime) -> str:
    return quote(at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"))


async def pull_payments(run: Pass, since: datetime) -> None:
    page_size = int(run.ctx.extra.get("qbo_page_size", PAYMENT_PAGE))
    statement = (
        f"SELECT * FROM Payment WHERE MetaData.LastUpdatedTime >= {_time_literal(since)}"
        " ORDERBY MetaData.LastUpdatedTime"
    )
    async for page in run.client.query_pages(statement, page_size, entity="Payment"):
        applications = [
            (payment, str(linked.get("TxnId", "")), line.get("Amount", 0))
            for payment in page
            for line in payment.get("Line") or []
            for linked in line.get("LinkedTxn") or []
            if linked.get("TxnType") == "Invoice"
        ]
        ours, seen = await _known(run, page, {qbo_id for _, qbo_id, _ in applications})
        for payment, qbo_invoice_id, amount in applications:
            invoice_id = ours.get(qbo_invoice_id)
            # Not an invoice the suite pushed (the accountant's own business), or handled before
            # (applied, skipped, or one of the suite's own payments pushed there).
            if invoice_id is None or (str(payment["Id"]), invoice_id) in seen:
                continue
            mine = our_payment_id(payment)
            if mine is not None:
                # The suite's own payment, created by push_payments: its money is already here.
                await _adopt_pushed(run, payment, invoice_id, mine, amount)
                continue
            await _apply(run, payment, invoice_id, amount)


async def _known(
    run: Pass, page: list[dict[str, Any]], qbo_invoice_ids: set[str]
) -> tuple[dict[str, uuid.UUID], set[tuple[str, uuid.UUID]]]:
    """For a page of payments, in one unit of work: our invoices by their QuickBooks ids, and the
    (payment, invoice) pairs already handled."""
    if not qbo_invoice_ids:
        return {}, set()
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        mapped = await uow.session.execute(
            select(qbo_invoices.c.qbo_invoice_id, qbo_invoices.c.invoice_id).where(
                qbo_invoices.c.org_id == run.ctx.org_id,
                qbo_invoices.c.realm_id == run.realm,
                qbo_invoices.c.qbo_invoice_id.in_(sorted(qbo_invoice_ids)),
            )
        )
        ours = {str(q): i for q, i in mapped}
        handled = await uow.session.execute(
            select(qbo_payments.c.qbo_payment_id, qbo_payments.c.invoice_id).where(
                qbo_payments.c.org_id == run.ctx.org_id,
                qbo_payments.c.realm_id == run.realm,
                qbo_payments.c.qbo_payment_id.in_(sorted({str(p["Id"]) for p in page})),
            )
        )
        seen = {(str(p), i) for p, i in handled}
    return ours, seen


def _line_cents(amount: Any) -> int:
    try:
        return int((Decimal(str(amount)) * 100).to_integral_value())
    except InvalidOperation:
        return 0


async def _adopt_pushed(
    run: Pass, payment: dict[str, Any], invoice_id: uuid.UUID, payment_id: uuid.UUID, amount: Any
) -> None:
    """A payment of ours found by the pull with no row (its create's answer was lost): recorded as
    pushed, never applied."""
    await _store_pushed(run, payment, invoice_id, payment_id, max(_line_cents(amount), 0))
    run.counts["payments_ours_seen"] += 1


async def _apply(run: Pass, payment: dict[str, Any], invoice_id: uuid.UUID, amount: Any) -> None:
    cents = _line_cents(amount)
    if cents <= 0:
        return  # a zero line (a payment unlinked in QuickBooks) moves no money
    outcome, detail = await _record_in_billing(run, payment, invoice_id, cents)
    statement = pg_insert(qbo_payments).values(
        org_id=run.ctx.org_id,
        realm_id=run.realm,
        qbo_payment_id=str(payment["Id"]),
        invoice_id=invoice_id,
        amount_cents=cents,
        outcome=outcome,
        detail=detail[:500],
    )
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        await uow.session.execute(statement.on_conflict_do_nothing())
    run.counts[f"payments_{outcome}"] += 1


async def _record_in_billing(
    run: Pass, payment: dict[str, Any], invoice_id: uuid.UUID, cents: int
) -> tuple[str, str]:
    """("applied", "") or ("skipped", billing's reason). Billing away fails the pass (cursor kept)."""
    request = billing_pb2.RecordExternalPaymentRequest(
        invoice_id=str(invoice_id),
        amount_cents=cents,
        currency=str((payment.get("CurrencyRef") or {}).get("value", "")),
        provider=QUICKBOOKS_PROVIDER,
        provider_ref=f"qbo:{run.realm}:{payment['Id']}:{invoice_id}",
    )
    received = _received_at(payment, run.ctx.now)
    if received is not None:
        request.received_at.FromDatetime(received.astimezone(UTC).replace(tzinfo=None))
    try:
        with run.ctx.peers.acting(run.ctx.org_id):
            await run.ctx.peers.billing.stub.RecordExternalPayment(request)
    except grpc.aio.AioRpcError as error:
        if error.code() in (
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
        ):
            detail = error.details() or error.code().name
            run.problem(f"QuickBooks payment {payment['Id']} was not applied to an invoice: {detail}")
            return "skipped", detail
        raise Unavailable(
            "the billing service is unavailable; the payments are applied on the next pass",
            code="billing_unavailable",
        ) from None
    return "applied", ""


def _received_at(payment: dict[str, Any], now: datetime) -> datetime | None:
    """The payment's date (TxnDate, the accountant's) at midnight UTC, never after now."""
    try:
        day = date.fromisoformat(str(payment.get("TxnDate", "")))
    except ValueError:
        return None
    return min(datetime.combine(day, time(0), tzinfo=UTC), now)
