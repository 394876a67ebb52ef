"""The migration helpers new services use: the event tables they create are exactly the ones
libs/common/db.py reads (no autogenerate difference), and tenant RLS is enabled, forced and scoped
to the org setting."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations

from libs.common import migration_helpers
from libs.common.db import service_metadata
from libs.common.settings import sqlalchemy_url


@pytest.fixture
def schema(stack: Any) -> Iterator[tuple[sa.Connection, Operations, str]]:
    name = f"mh_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(sqlalchemy_url(stack.admin_url))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {name}"))
        yield conn, Operations(MigrationContext.configure(conn)), name
        conn.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))
    engine.dispose()


def test_create_event_tables_matches_what_the_unit_of_work_reads(
    schema: tuple[sa.Connection, Operations, str],
) -> None:
    conn, ops, name = schema
    with Operations.context(ops.migration_context):
        migration_helpers.create_event_tables(name)
        migration_helpers.add_event_trace_context(name)
    metadata, _ = service_metadata(name)
    context = MigrationContext.configure(
        conn,
        opts={"include_schemas": True, "include_name": lambda n, kind, _: kind != "schema" or n == name},
    )
    assert compare_metadata(context, metadata) == []
    # The comparison does see this schema: against no tables, all three show as extra.
    removed = {
        diff[1].name
        for diff in compare_metadata(context, sa.MetaData(schema=name))
        if diff[0] == "remove_table"
    }
    assert removed == {"event_outbox", "event_inbox", "event_dead_letters"}

    with Operations.context(ops.migration_context):
        migration_helpers.drop_event_tables(name)
    left = conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = :s"), {"s": name}).scalar()
    assert left == 0


def test_enable_tenant_rls_forces_an_org_policy(schema: tuple[sa.Connection, Operations, str]) -> None:
    conn, ops, name = schema
    conn.execute(sa.text(f"CREATE TABLE {name}.things (id int PRIMARY KEY, org_id uuid NOT NULL)"))
    with Operations.context(ops.migration_context):
        migration_helpers.enable_tenant_rls(name, ["things"])
    enabled, forced = conn.execute(
        sa.text("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = :t ::regclass"),
        {"t": f"{name}.things"},
    ).one()
    assert (enabled, forced) == (True, True)
    [(policy, using, check)] = conn.execute(
        sa.text(
            "SELECT policyname, qual, with_check FROM pg_policies WHERE schemaname = :s AND tablename = 'things'"
        ),
        {"s": name},
    ).all()
    assert policy == "things_org_isolation"
    assert "app.current_org_id" in using and "app.current_org_id" in check
