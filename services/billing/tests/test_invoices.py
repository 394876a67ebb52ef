"""Invoices against real Postgres, as the runtime role under forced RLS: drafts, item edits, issuing
with gap-free per-org numbers (also under concurrent issuers), the frozen tax snapshot, void, and
tenancy. Writes behind the code's back go through the superuser connection (which bypasses RLS)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select, update

from libs.common.db import Database, unit_of_work
from libs.common.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from services.billing import invoices, models
from services.billing.models import SCHEMA, event_tables
from services.billing.status import InvoiceStatus
from services.billing.totals import line_item, recalculate_totals

TODAY = date(2026, 12, 2)
CLEANING = {"description": "Deep clean", "quantity": "3", "unit_price_cents": 4500, "tax_rate": "13"}
SUPPLIES = {"description": "Supplies", "quantity": "1.5", "unit_price_cents": 1503, "tax_rate": "0"}


class RolledBack(Exception):
    """Raised inside a unit of work to roll it back on purpose."""


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=24)
    yield database
    await database.dispose()


async def draft(db: Database, org: uuid.UUID, items: list[dict[str, Any]] | None = None) -> invoices.Invoice:
    async with unit_of_work(db, org) as uow:
        return await invoices.create_draft(
            uow,
            "cad",
            "Ada Client",
            "ada@example.com",
            items or [CLEANING],
            due_date=TODAY + timedelta(days=14),
        )


async def issue(db: Database, org: uuid.UUID, invoice_id: uuid.UUID) -> invoices.Invoice:
    async with unit_of_work(db, org) as uow:
        return await invoices.issue(uow, invoice_id, TODAY)


async def get(db: Database, org: uuid.UUID, invoice_id: uuid.UUID) -> invoices.Invoice:
    async with unit_of_work(db, org) as uow:
        return await invoices.get(uow, invoice_id)


def lines(*items: dict[str, Any]) -> list[Any]:
    return [line_item(**item) for item in items]


async def test_create_edit_issue_numbers_and_freezes_the_snapshot(db: Database) -> None:
    org = uuid.uuid4()
    created = await draft(db, org)
    assert created.status is InvoiceStatus.DRAFT and created.number is None and created.currency == "CAD"
    assert created.totals == recalculate_totals(lines(CLEANING))

    async with unit_of_work(db, org) as uow:
        edited = await invoices.replace_items(uow, created.id, [CLEANING, SUPPLIES])
    expected = recalculate_totals(lines(CLEANING, SUPPLIES))
    assert edited.totals == expected
    assert expected.subtotal_cents == 13500 + 2254  # 1.5 x 1503 = 2254.5, half to even
    assert expected.tax_cents == 1755 and expected.taxable_subtotal_cents == 13500
    assert [i.description for i in edited.items] == ["Deep clean", "Supplies"]

    issued = await issue(db, org, created.id)
    assert issued.number == "INV-000001" and issued.status is InvoiceStatus.SENT
    assert issued.totals == expected and issued.issued_at is not None
    assert issued.due_date == TODAY + timedelta(days=14)

    second = await issue(db, org, (await draft(db, org)).id)
    assert second.number == "INV-000002"


async def test_an_issued_invoice_refuses_item_edits_and_issuing_again(db: Database) -> None:
    org = uuid.uuid4()
    issued = await issue(db, org, (await draft(db, org)).id)
    with pytest.raises(FailedPrecondition) as refused:
        async with unit_of_work(db, org) as uow:
            await invoices.replace_items(uow, issued.id, [SUPPLIES])
    assert refused.value.code == "invoice_not_draft"
    with pytest.raises(FailedPrecondition) as again:
        await issue(db, org, issued.id)
    assert again.value.code == "invoice_not_draft"
    assert await get(db, org, issued.id) == issued


async def test_the_issued_snapshot_is_never_recomputed_from_changed_items(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    issued = await issue(db, org, (await draft(db, org, [CLEANING, SUPPLIES])).id)
    frozen = issued.totals
    # Behind the code's back: the items now say 5 % where 13 % was charged.
    with psycopg.connect(stack.admin_url) as admin:
        admin.execute("UPDATE billing.invoice_items SET tax_rate = 5 WHERE invoice_id = %s", (issued.id,))
    after = await get(db, org, issued.id)
    assert {i.tax_rate for i in after.items} == {Decimal(5)}
    assert recalculate_totals(after.items) != frozen  # the items would give another snapshot
    assert after.totals == frozen  # but reads return the stored one
    with pytest.raises(FailedPrecondition):
        async with unit_of_work(db, org) as uow:
            await invoices.replace_items(uow, issued.id, [SUPPLIES])
    async with unit_of_work(db, org) as uow:
        voided = await invoices.void(uow, issued.id)
    assert voided.totals == frozen and voided.number == issued.number
    with psycopg.connect(stack.admin_url) as admin:
        row = admin.execute(
            "SELECT subtotal_cents, taxable_subtotal_cents, tax_cents, tax_rate_basis, total_cents "
            "FROM billing.invoices WHERE id = %s",
            (issued.id,),
        ).fetchone()
    assert row == (
        frozen.subtotal_cents,
        frozen.taxable_subtotal_cents,
        frozen.tax_cents,
        frozen.tax_rate_basis,
        frozen.total_cents,
    )

    # Only a DRAFT's item edit recomputes: the same change on a draft does reach its snapshot.
    open_draft = await draft(db, org)
    async with unit_of_work(db, org) as uow:
        edited = await invoices.replace_items(uow, open_draft.id, [{**CLEANING, "tax_rate": "5"}])
    assert edited.totals.tax_cents == 675 and edited.totals.tax_rate_basis == Decimal("5.0000")


async def test_twenty_concurrent_issuers_get_1_to_20_and_rolled_back_issues_leave_no_gap(
    db: Database,
) -> None:
    org = uuid.uuid4()
    drafts = [(await draft(db, org)).id for _ in range(25)]
    kept, abandoned = drafts[:20], drafts[20:]

    async def issue_then_roll_back(invoice_id: uuid.UUID) -> None:
        with pytest.raises(RolledBack):
            async with unit_of_work(db, org) as uow:
                taken = await invoices.issue(uow, invoice_id, TODAY)
                assert taken.number is not None
                await asyncio.sleep(0.01)  # hold the counter lock while others queue on it
                raise RolledBack

    results = await asyncio.gather(
        *(issue(db, org, invoice_id) for invoice_id in kept),
        *(issue_then_roll_back(invoice_id) for invoice_id in abandoned),
    )
    numbers = sorted(r.number for r in results if isinstance(r, invoices.Invoice) and r.number)
    assert numbers == [invoices.format_number(n) for n in range(1, 21)]
    for invoice_id in abandoned:
        assert (await get(db, org, invoice_id)).status is InvoiceStatus.DRAFT

    # One more rolled back alone, then a committed one: it takes 21, not 22.
    await issue_then_roll_back(abandoned[0])
    assert (await issue(db, org, abandoned[1])).number == "INV-000021"


async def test_two_orgs_number_independently(db: Database) -> None:
    org_a, org_b = uuid.uuid4(), uuid.uuid4()
    first_a = await issue(db, org_a, (await draft(db, org_a)).id)
    first_b = await issue(db, org_b, (await draft(db, org_b)).id)
    second_a = await issue(db, org_a, (await draft(db, org_a)).id)
    assert (first_a.number, first_b.number, second_a.number) == ("INV-000001", "INV-000001", "INV-000002")


async def test_a_second_invoice_for_a_booking_is_a_conflict_even_at_the_same_instant(db: Database) -> None:
    org, booking = uuid.uuid4(), uuid.uuid4()

    async def for_booking() -> invoices.Invoice:
        async with unit_of_work(db, org) as uow:
            return await invoices.create_draft(
                uow, "cad", "Ada Client", "ada@example.com", [CLEANING], booking_id=booking
            )

    # As the booking-completed consumer and an admin's POST can: both at once, one wins.
    results = await asyncio.gather(*(for_booking() for _ in range(4)), return_exceptions=True)
    made = [r for r in results if isinstance(r, invoices.Invoice)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert (len(made), len(refused)) == (1, 3), results
    assert refused[0].code == "booking_has_invoice" and str(booking) in str(refused[0]), refused[0]
    assert made[0].booking_id == booking
    # Another booking, and invoices with no booking, are not held up by it.
    async with unit_of_work(db, org) as uow:
        await invoices.create_draft(
            uow, "cad", "Ada Client", "ada@example.com", [CLEANING], booking_id=uuid.uuid4()
        )
        await invoices.create_draft(uow, "cad", "Ada Client", "ada@example.com", [CLEANING])
        await invoices.create_draft(uow, "cad", "Ada Client", "ada@example.com", [CLEANING])


async def test_void_rules(db: Database) -> None:
    org = uuid.uuid4()
    async with unit_of_work(db, org) as uow:
        voided_draft = await invoices.void(uow, (await draft(db, org)).id)
    assert voided_draft.status is InvoiceStatus.VOID and voided_draft.number is None

    sent = await issue(db, org, (await draft(db, org)).id)
    assert sent.number == "INV-000001"  # the voided draft took no number
    async with unit_of_work(db, org) as uow:
        voided = await invoices.void(uow, sent.id)
    assert voided.status is InvoiceStatus.VOID and voided.number == "INV-000001"

    free = await issue(db, org, (await draft(db, org, [{**CLEANING, "unit_price_cents": 0}])).id)
    assert free.status is InvoiceStatus.PAID and free.number == "INV-000002"  # a 0-cent invoice is paid
    for invoice_id in (voided.id, free.id):
        with pytest.raises(FailedPrecondition) as refused:
            async with unit_of_work(db, org) as uow:
                await invoices.void(uow, invoice_id)
        assert refused.value.code == "invoice_not_voidable"
    assert (await get(db, org, free.id)).status is InvoiceStatus.PAID


async def test_another_orgs_invoice_is_not_found_and_unchanged(db: Database, stack: Any) -> None:
    org_a, org_b = uuid.uuid4(), uuid.uuid4()
    a_draft = await draft(db, org_a)
    a_issued = await issue(db, org_a, (await draft(db, org_a)).id)
    for target in (a_draft.id, a_issued.id):
        for action in ("get", "replace_items", "issue", "void"):
            with pytest.raises(NotFound):
                async with unit_of_work(db, org_b) as uow:
                    if action == "get":
                        await invoices.get(uow, target)
                    elif action == "replace_items":
                        await invoices.replace_items(uow, target, [SUPPLIES])
                    elif action == "issue":
                        await invoices.issue(uow, target, TODAY)
                    else:
                        await invoices.void(uow, target)
    async with unit_of_work(db, org_b) as uow:
        for table in ("invoices", "invoice_items", "invoice_number_counters"):
            seen = await uow.session.execute(
                select(func.count()).select_from(models.metadata.tables[f"billing.{table}"])
            )
            assert seen.scalar_one() == 0, table
    assert await get(db, org_a, a_draft.id) == a_draft
    assert await get(db, org_a, a_issued.id) == a_issued
    # Org B issuing its own first invoice is unaffected by org A's counter.
    assert (await issue(db, org_b, (await draft(db, org_b)).id)).number == "INV-000001"


async def test_bad_input_names_the_field(db: Database) -> None:
    org = uuid.uuid4()
    with pytest.raises(InvalidArgument) as bad:
        async with unit_of_work(db, org) as uow:
            await invoices.create_draft(
                uow,
                "JPY",
                " ",
                "not-an-email",
                [CLEANING, {**SUPPLIES, "quantity": "0", "tax_rate": "101"}],
                booking_id="nope",
            )
    assert {v.field for v in bad.value.violations} == {
        "currency",
        "client_name",
        "client_email",
        "items.1.quantity",
        "items.1.tax_rate",
        "booking_id",
    }
    with pytest.raises(InvalidArgument) as empty:
        async with unit_of_work(db, org) as uow:
            await invoices.create_draft(uow, "CAD", "Ada", "ada@example.com", [])
    assert [v.field for v in empty.value.violations] == ["items"]
    with pytest.raises(InvalidArgument) as bad_id:
        async with unit_of_work(db, org) as uow:
            await invoices.get(uow, "not-a-uuid")
    assert [v.field for v in bad_id.value.violations] == ["invoice_id"]
    with pytest.raises(NotFound):
        await get(db, org, uuid.uuid4())

    overdue = await draft(db, org)
    async with unit_of_work(db, org) as uow:
        await uow.session.execute(
            update(models.invoices)
            .where(models.invoices.c.id == overdue.id)
            .values(due_date=TODAY - timedelta(days=1))
        )
    with pytest.raises(InvalidArgument) as past:
        await issue(db, org, overdue.id)
    assert [v.field for v in past.value.violations] == ["due_date"]
    assert (await get(db, org, overdue.id)).status is InvoiceStatus.DRAFT


def test_the_database_refuses_what_must_never_be_stored(stack: Any) -> None:
    org, invoice_id = uuid.uuid4(), uuid.uuid4()
    insert = (
        "INSERT INTO billing.invoices (id, org_id, status, currency, client_name, client_email{extra}) "
        "VALUES (%s, %s, %s, 'CAD', 'Ada', 'ada@example.com'{values})"
    )
    with psycopg.connect(stack.admin_url, autocommit=True) as admin:
        admin.execute(insert.format(extra="", values=""), (invoice_id, org, "DRAFT"))
        refused = [
            (insert.format(extra=", number", values=", 'INV-000001'"), (uuid.uuid4(), org, "DRAFT")),
            (insert.format(extra="", values=""), (uuid.uuid4(), org, "SENT")),  # issued, no number
            (insert.format(extra="", values=""), (uuid.uuid4(), org, "LOST")),
            (insert.format(extra=", tax_cents", values=", -1"), (uuid.uuid4(), org, "DRAFT")),
            (insert.format(extra=", subtotal_cents", values=", 5"), (uuid.uuid4(), org, "DRAFT")),  # total 0
        ]
        for statement, params in refused:
            with pytest.raises(psycopg.errors.CheckViolation):
                admin.execute(statement, params)
        with pytest.raises(psycopg.errors.CheckViolation):
            admin.execute(
                "INSERT INTO billing.invoice_items (id, org_id, invoice_id, position, description, quantity, "
                "unit_price_cents, tax_rate, amount_cents) VALUES (%s, %s, %s, 0, 'x', 1, -5, 0, 0)",
                (uuid.uuid4(), org, invoice_id),
            )
        # An item can only belong to an invoice of its own org.
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            admin.execute(
                "INSERT INTO billing.invoice_items (id, org_id, invoice_id, position, description, quantity, "
                "unit_price_cents, tax_rate, amount_cents) VALUES (%s, %s, %s, 0, 'x', 1, 5, 0, 5)",
                (uuid.uuid4(), uuid.uuid4(), invoice_id),
            )


def test_every_billing_tenant_table_has_forced_rls_and_an_org_policy(stack: Any) -> None:
    with psycopg.connect(stack.admin_url) as admin:
        tables = admin.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = 'billing'
                           AND p.tablename = c.relname AND p.policyname = c.relname || '_org_isolation')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'billing' AND c.relkind = 'r'
              AND c.relname NOT IN ('event_outbox', 'event_inbox', 'event_dead_letters', 'alembic_version')
              AND c.relname <> ALL(%s)
            ORDER BY c.relname
            """,
            (list(models.GLOBAL_TABLES),),
        ).fetchall()
        # A table left out of RLS must hold no org's data: no org_id column.
        global_with_org = admin.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'billing'"
            " AND column_name = 'org_id' AND table_name = ANY(%s)",
            (list(models.GLOBAL_TABLES),),
        ).fetchall()
    assert tables == [(name, True, True, True) for name in sorted(models.TENANT_TABLES)]
    assert global_with_org == []
