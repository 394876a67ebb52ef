"""Billing's PrivacyService through its gRPC API, against real Postgres and the local Stripe (issue 13):
a person's invoices are found by booking, by email and by id; the export is metadata only; the erasure
anonymises invoices while their totals stay, ends their public links, scrubs free text, deletes the
Stripe customer (at Stripe and its mapping), resumes after Stripe was unreachable, and a second call
changes nothing. Rows are checked through the superuser connection (what the service must not show)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
from cws.billing.v1 import billing_pb2, billing_pb2_grpc
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc
from google.protobuf import json_format

from conftest import STRIPE_TEST_KEY, billing_env
from libs.common import context as request_context
from libs.common.db import Database, unit_of_work
from libs.common.privacy import ERASED
from services.billing import links
from services.billing.models import SCHEMA, event_tables
from tools.devstack import free_port
from tools.processes import ServiceProc, service_proc
from tools.stripe_local import LocalStripe
from tools.testkit import as_role, as_service, rpc_error, signed, signing_channel, sql


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=4)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
def billing_without_stripe(
    stack: Any, iam: Any, booking: Any, notify: Any, local_stripe: LocalStripe, media: Any
) -> Iterator[ServiceProc]:
    """A second billing on the same database whose Stripe is a port nobody listens on: Stripe down."""
    env = {
        **billing_env(stack, iam, booking, notify, local_stripe, media),
        "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}",
    }
    proc = service_proc("billing", env, stack.work_dir / "logs", label="billing-stripe-down")
    proc.start().wait_ready()
    yield proc
    proc.stop()


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.billing = billing_pb2_grpc.BillingServiceStub(channel)
        self.privacy = privacy_pb2_grpc.PrivacyServiceStub(channel)


@pytest.fixture
async def stubs(billing: Any) -> AsyncIterator[Stubs]:
    async with signing_channel(billing.target) as channel:
        yield Stubs(channel)


def person_named() -> tuple[str, str]:
    """(a unique email, a unique name): each test's person is its own."""
    tag = uuid.uuid4().hex[:8]
    return f"ada.{tag}@example.com", f"Ada Lovelace{tag}"


async def invoice(
    stubs: Stubs, org: str, email: str, name: str, *, booking_id: str = "", description: str = "Deep clean"
) -> str:
    """An issued invoice (SENT, INV-...) for 3 x 45.00 + 13 %."""
    created = await stubs.billing.CreateInvoice(
        billing_pb2.CreateInvoiceRequest(
            client_name=name,
            client_email=email,
            booking_id=booking_id,
            items=[
                billing_pb2.LineItem(
                    description=description, quantity="3", unit_price_cents=4500, tax_rate="13"
                )
            ],
        ),
        metadata=as_role(org, "FINANCE"),
    )
    await stubs.billing.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(invoice_id=created.invoice.id), metadata=as_role(org, "FINANCE")
    )
    return str(created.invoice.id)


async def export(stubs: Stubs, org: str, person: privacy_pb2.Person, role: str = "OWNER") -> dict[str, Any]:
    answer = await stubs.privacy.ExportPerson(
        privacy_pb2.ExportPersonRequest(person=person), metadata=as_role(org, role)
    )
    return json_format.MessageToDict(answer.sections)


async def erase(stubs: Stubs, org: str, person: privacy_pb2.Person) -> privacy_pb2.ErasePersonResponse:
    return await stubs.privacy.ErasePerson(
        privacy_pb2.ErasePersonRequest(request_id=str(uuid.uuid4()), person=person),
        metadata=as_service(org, "jobs"),
    )


async def erase_until_done(stubs: Stubs, org: str, person: privacy_pb2.Person) -> int:
    """Erase until no pending reason is left (billing's own events may wait a moment for the relay);
    the rows changed over all calls."""
    changed = 0
    for _ in range(50):
        answer = await erase(stubs, org, person)
        changed += answer.changed
        if not answer.pending_reason:
            return changed
        await asyncio.sleep(0.1)
    raise AssertionError(f"erasure still pending: {answer.pending_reason}")


def public(token: str) -> billing_pb2.GetPublicInvoiceRequest:
    return billing_pb2.GetPublicInvoiceRequest(token=token)


def anonymous() -> Any:
    return signed(request_context.RequestContext(request_id=f"test-{uuid.uuid4().hex[:12]}"))


async def stripe_customer(local_stripe: LocalStripe, customer_id: str) -> int:
    """The status of GET /v1/customers/{id} at the local Stripe (404 once deleted)."""
    async with httpx.AsyncClient(base_url=local_stripe.api_base, auth=(STRIPE_TEST_KEY, "")) as http:
        return (await http.get(f"/v1/customers/{customer_id}")).status_code


async def customers_of(stack: Any, org: str) -> list[tuple[Any, ...]]:
    return await sql(
        stack.admin_url,
        "SELECT email, customer_id FROM billing.stripe_customers WHERE org_id = %s ORDER BY email",
        (uuid.UUID(org),),
    )


async def invoice_row(stack: Any, invoice_id: str) -> tuple[Any, ...]:
    [row] = await sql(
        stack.admin_url,
        "SELECT client_name, client_email, number, status, subtotal_cents, taxable_subtotal_cents, tax_cents,"
        " total_cents, tax_rate_basis, issued_at, currency FROM billing.invoices WHERE id = %s",
        (uuid.UUID(invoice_id),),
    )
    return row


async def tokens_of(stack: Any, invoice_id: str) -> int:
    [(count,)] = await sql(
        stack.admin_url,
        "SELECT count(*) FROM billing.invoice_public_tokens WHERE invoice_id = %s",
        (uuid.UUID(invoice_id),),
    )
    return int(count)


async def mint(db: Database, org: str, invoice_id: str) -> str:
    """A public link of our own to the invoice (SendInvoice's goes into the email only)."""
    async with unit_of_work(db, org) as uow:
        return await links.mint(uow, uuid.UUID(invoice_id))


# --- export ---------------------------------------------------------------------------------------


async def test_export_finds_invoices_by_booking_email_and_id_metadata_only(stubs: Stubs, stack: Any) -> None:
    org = str(uuid.uuid4())
    email, name = person_named()
    booking_id = str(uuid.uuid4())
    by_booking = await invoice(
        stubs, org, f"other.{uuid.uuid4().hex[:6]}@example.com", name, booking_id=booking_id
    )
    by_email = await invoice(stubs, org, email, name)
    # The email matches whatever its case on the invoice (a row from before emails were normalised).
    await sql(
        stack.admin_url,
        "UPDATE billing.invoices SET client_email = upper(client_email) WHERE id = %s",
        (uuid.UUID(by_email),),
    )
    by_id = await invoice(stubs, org, f"third.{uuid.uuid4().hex[:6]}@example.com", "Someone")
    unrelated = await invoice(stubs, org, f"nobody.{uuid.uuid4().hex[:6]}@example.com", "Nobody Else")
    await stubs.billing.RecordManualPayment(
        billing_pb2.RecordManualPaymentRequest(
            invoice_id=by_email, amount_cents=5000, method="cheque", reference="cheque 12"
        ),
        metadata=as_role(org, "FINANCE"),
    )
    person = privacy_pb2.Person(emails=[email], booking_ids=[booking_id], invoice_ids=[by_id])

    sections = await export(stubs, org, person)

    assert set(sections) == {"invoices", "payments", "refunds"}
    found = {i["id"]: i for i in sections["invoices"]}
    assert set(found) == {by_booking, by_email, by_id} and unrelated not in found
    assert found[by_booking]["booking_id"] == booking_id
    assert found[by_email]["client_email"] == email.upper() and found[by_email]["client_name"] == name
    assert (found[by_email]["total_cents"], found[by_email]["tax_cents"], found[by_email]["currency"]) == (
        15255,
        1755,
        "CAD",
    )
    assert found[by_email]["number"].startswith("INV-") and found[by_email]["status"] == "PARTIAL"
    [payment] = sections["payments"]
    assert (payment["invoice_id"], payment["amount_cents"], payment["method"], payment["status"]) == (
        by_email,
        5000,
        "cheque",
        "succeeded",
    )
    assert sections["refunds"] == []
    # Metadata only: no tokens, links or Checkout URLs, and no free-text reference.
    text = str(sections)
    assert "token" not in text and "url" not in text and "http" not in text and "cheque 12" not in text

    # By email alone, case-insensitively as booking hands it over (lower case).
    only_email = await export(stubs, org, privacy_pb2.Person(emails=[email.lower()]))
    assert [i["id"] for i in only_email["invoices"]] == [by_email]


async def test_export_of_an_unknown_person_or_another_org_is_empty_and_needs_a_manager(stubs: Stubs) -> None:
    org = str(uuid.uuid4())
    email, name = person_named()
    booking_id = str(uuid.uuid4())
    mine = await invoice(stubs, org, email, name, booking_id=booking_id)
    person = privacy_pb2.Person(emails=[email], booking_ids=[booking_id], invoice_ids=[mine])
    empty: dict[str, list[Any]] = {"invoices": [], "payments": [], "refunds": []}

    # Another org asking about the same person, ids and all, gets nothing.
    assert await export(stubs, str(uuid.uuid4()), person) == empty
    # Someone the org does not know, and ids that are no UUIDs (ignored, not an error).
    assert await export(stubs, org, privacy_pb2.Person(emails=["nobody@example.com"])) == empty
    assert await export(stubs, org, privacy_pb2.Person(booking_ids=["nope"], invoice_ids=["x"])) == empty
    assert await export(stubs, org, privacy_pb2.Person()) == empty
    # OWNER and ADMIN only.
    assert len((await export(stubs, org, person, "ADMIN"))["invoices"]) == 1
    for role in ("FINANCE", "DISPATCHER", "VIEWER"):
        await rpc_error(
            stubs.privacy.ExportPerson(
                privacy_pb2.ExportPersonRequest(person=person), metadata=as_role(org, role)
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )


# --- erasure --------------------------------------------------------------------------------------


async def test_erase_anonymises_keeps_totals_ends_links_deletes_the_stripe_customer_and_is_idempotent(
    stubs: Stubs, stack: Any, db: Database, local_stripe: LocalStripe
) -> None:
    org = str(uuid.uuid4())
    email, name = person_named()
    booking_id = str(uuid.uuid4())
    invoice_id = await invoice(
        stubs, org, email, name, booking_id=booking_id, description=f"Deep clean at {name}'s flat"
    )
    other_email, other_name = person_named()
    other_invoice = await invoice(stubs, org, other_email, other_name)
    # Sent (a link emailed), paid in part by hand with a note naming the client, and a Checkout opened
    # (a Stripe customer for the client, remembered by email).
    await stubs.billing.SendInvoice(
        billing_pb2.SendInvoiceRequest(invoice_id=invoice_id), metadata=as_role(org, "FINANCE")
    )
    token = await mint(db, org, invoice_id)
    await stubs.billing.RecordManualPayment(
        billing_pb2.RecordManualPaymentRequest(
            invoice_id=invoice_id, amount_cents=5000, method="etransfer", reference=f"e-transfer from {name}"
        ),
        metadata=as_role(org, "FINANCE"),
    )
    await stubs.billing.CreateInvoiceCheckout(
        billing_pb2.CreateInvoiceCheckoutRequest(invoice_id=invoice_id), metadata=as_role(org, "FINANCE")
    )
    [(_, customer_id)] = await customers_of(stack, org)
    assert await stripe_customer(local_stripe, customer_id) == 200
    assert (
        await stubs.billing.GetPublicInvoice(public(token), metadata=anonymous())
    ).invoice.id == invoice_id
    before = await invoice_row(stack, invoice_id)
    assert await tokens_of(stack, invoice_id) == 2
    person = privacy_pb2.Person(emails=[email], booking_ids=[booking_id], pii_values=[name])

    # Only suite services erase, and another org's erasure of the same person touches nothing here.
    await rpc_error(
        stubs.privacy.ErasePerson(
            privacy_pb2.ErasePersonRequest(request_id="r", person=person), metadata=as_role(org, "OWNER")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    elsewhere = await erase(stubs, str(uuid.uuid4()), person)
    assert (elsewhere.changed, list(elsewhere.invoice_ids)) == (0, [])
    assert await invoice_row(stack, invoice_id) == before
    # Ids that are no UUIDs match nothing (the driver's person is booking's; nothing to refuse).
    garbled = await erase(stubs, org, privacy_pb2.Person(booking_ids=["nope"], invoice_ids=["x"]))
    assert (garbled.changed, garbled.pending_reason, list(garbled.invoice_ids)) == (0, "", [])
    assert await invoice_row(stack, invoice_id) == before

    first = await erase(stubs, org, person)
    assert list(first.invoice_ids) == [invoice_id]
    changed = first.changed + (await erase_until_done(stubs, org, person) if first.pending_reason else 0)
    # name and email, two links, one item, one payment reference, one customer at least.
    assert changed >= 6

    after = await invoice_row(stack, invoice_id)
    assert (after[0], after[1]) == (ERASED, "")
    assert after[2:] == before[2:]  # number, status, the whole snapshot and currency untouched
    assert await tokens_of(stack, invoice_id) == 0
    await rpc_error(
        stubs.billing.GetPublicInvoice(public(token), metadata=anonymous()), grpc.StatusCode.NOT_FOUND
    )
    [(description,)] = await sql(
        stack.admin_url,
        "SELECT description FROM billing.invoice_items WHERE invoice_id = %s",
        (uuid.UUID(invoice_id),),
    )
    assert description == f"Deep clean at {ERASED}'s flat"
    [(reference, amount)] = await sql(
        stack.admin_url,
        "SELECT reference, amount_cents FROM billing.invoice_payments WHERE invoice_id = %s",
        (uuid.UUID(invoice_id),),
    )
    assert (reference, amount) == (f"e-transfer from {ERASED}", 5000)
    assert await customers_of(stack, org) == []
    assert await stripe_customer(local_stripe, customer_id) == 404
    # The other client of the org is untouched.
    assert (await invoice_row(stack, other_invoice))[:2] == (other_name, other_email)

    # Again: nothing left to change, done, the same invoice found (by booking; by the id billing gave).
    again = await erase(stubs, org, person)
    assert (again.changed, again.pending_reason, list(again.invoice_ids)) == (0, "", [invoice_id])
    by_id = await erase(stubs, org, privacy_pb2.Person(invoice_ids=[invoice_id]))
    assert (by_id.changed, by_id.pending_reason, list(by_id.invoice_ids)) == (0, "", [invoice_id])
    # The export now shows the invoice without its client.
    [exported] = (await export(stubs, org, privacy_pb2.Person(invoice_ids=[invoice_id])))["invoices"]
    assert (exported["client_name"], exported["client_email"], exported["total_cents"]) == (ERASED, "", 15255)


async def test_erase_with_stripe_unreachable_is_pending_then_finished_by_the_next_run(
    stubs: Stubs, stack: Any, local_stripe: LocalStripe, billing_without_stripe: ServiceProc
) -> None:
    org = str(uuid.uuid4())
    email, name = person_named()
    booking_id = str(uuid.uuid4())
    invoice_id = await invoice(stubs, org, email, name, booking_id=booking_id)
    await stubs.billing.CreateInvoiceCheckout(
        billing_pb2.CreateInvoiceCheckoutRequest(invoice_id=invoice_id), metadata=as_role(org, "FINANCE")
    )
    [(_, customer_id)] = await customers_of(stack, org)
    # The request knows the person by booking only: the invoice's email is billing's own knowledge.
    person = privacy_pb2.Person(booking_ids=[booking_id], pii_values=[name])

    async with signing_channel(billing_without_stripe.target) as channel:
        down = await Stubs(channel).privacy.ErasePerson(
            privacy_pb2.ErasePersonRequest(request_id="r1", person=person), metadata=as_service(org, "jobs")
        )
    assert "Stripe" in down.pending_reason and list(down.invoice_ids) == [invoice_id]
    # The client is erased but for the email, which is how the next run finds the Stripe customer.
    assert (await invoice_row(stack, invoice_id))[:2] == (ERASED, email)
    assert await customers_of(stack, org) == [(email, customer_id)]
    assert await stripe_customer(local_stripe, customer_id) == 200

    # The next run, with Stripe back (the session's billing): the customer goes, then the email.
    await erase_until_done(stubs, org, person)
    assert (await invoice_row(stack, invoice_id))[:2] == (ERASED, "")
    assert await customers_of(stack, org) == []
    assert await stripe_customer(local_stripe, customer_id) == 404
    again = await erase(stubs, org, person)
    assert (again.changed, again.pending_reason) == (0, "")


async def test_a_customer_already_gone_at_stripe_counts_as_deleted(
    stubs: Stubs, stack: Any, local_stripe: LocalStripe
) -> None:
    org = str(uuid.uuid4())
    email, name = person_named()
    invoice_id = await invoice(stubs, org, email, name)
    await stubs.billing.CreateInvoiceCheckout(
        billing_pb2.CreateInvoiceCheckoutRequest(invoice_id=invoice_id), metadata=as_role(org, "FINANCE")
    )
    [(_, customer_id)] = await customers_of(stack, org)
    async with httpx.AsyncClient(base_url=local_stripe.api_base, auth=(STRIPE_TEST_KEY, "")) as http:
        assert (await http.delete(f"/v1/customers/{customer_id}")).status_code == 200

    await erase_until_done(stubs, org, privacy_pb2.Person(emails=[email]))
    assert await customers_of(stack, org) == []
