"""The invoices list, newest first, reads a page through an index under row-level security (issue 16:
the console's invoices page sorted every invoice of the org per page before migration 0011)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from libs.common.db import Database
from services.billing import invoices
from services.billing.models import SCHEMA, event_tables
from tools.bench.billing_bench import seed_invoices
from tools.testkit import explained

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=1)
    try:
        yield database
    finally:
        await database.dispose()


async def test_a_page_of_the_newest_invoices_is_read_by_index_not_sorted(stack: Any, db: Database) -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    seed_invoices(stack.admin_url, other, 20_000)  # another org's many invoices: RLS must not read them
    seed_invoices(stack.admin_url, mine, 2_000)
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute("ANALYZE billing.invoices")

    plans = await explained(db, mine, lambda uow: invoices.list_page(uow, limit=50, offset=0))
    page = next(nodes for statement, nodes in plans if "ORDER BY" in statement)
    kinds = [node["Node Type"] for node in page]
    assert "Sort" not in kinds, kinds
    scans = [node for node in page if node.get("Relation Name") == "invoices"]
    assert scans and all(node.get("Index Name") == "ix_invoices_org_created" for node in scans), scans
    assert sum(node.get("Actual Rows", 0) for node in scans) <= 50
