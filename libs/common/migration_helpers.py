"""What every service's first migration repeats, written once for new migrations: the event
outbox, inbox and dead-letter tables (libs/common/db.py reads them) and forced row-level security
on tenant tables. Histories already applied stay as they are: a migration is a frozen snapshot."""

from __future__ import annotations

import os
from collections.abc import Iterable

import sqlalchemy as sa
from alembic import op

from libs.common.db import ORG_PREDICATE


def create_event_tables(schema: str) -> None:
    """event_outbox, event_inbox and event_dead_letters in `schema`, as `service_metadata` declared
    them up to issue 14; a new service's first migration then calls `add_event_trace_context` too (the
    histories that already called this one stay as they were applied)."""
    op.create_table(
        "event_dead_letters",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.Text(), server_default="{}", nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_dead_letters")),
        schema=schema,
    )
    op.create_table(
        "event_inbox",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_event_inbox")),
        schema=schema,
    )
    op.create_table(
        "event_outbox",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("request_id", sa.String(length=100), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_outbox")),
        schema=schema,
    )
    op.create_index(
        "ix_event_outbox_unpublished",
        "event_outbox",
        ["created_at"],
        unique=False,
        schema=schema,
        postgresql_where=sa.text("published_at IS NULL"),
    )


def drop_event_tables(schema: str) -> None:
    op.drop_index("ix_event_outbox_unpublished", table_name="event_outbox", schema=schema)
    for table in ("event_outbox", "event_inbox", "event_dead_letters"):
        op.drop_table(table, schema=schema)


def enable_tenant_rls(schema: str, tables: Iterable[str]) -> None:
    """RLS enabled and FORCED (the owner is bound too) with the org-isolation policy on each table.
    With no org set in the transaction, a query sees no rows and can write none."""
    for table in tables:
        op.execute(f"ALTER TABLE {schema}.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {schema}.{table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_org_isolation ON {schema}.{table} "
            f"USING ({ORG_PREDICATE}) WITH CHECK ({ORG_PREDICATE})"
        )


def owner_only_policy(
    schema: str, table: str, name: str, command: str = "SELECT", with_check: bool = False
) -> None:
    """(Re)create policy `name` on `schema.table` granting every row (`USING (true)`) to the table's
    owner alone, for the SECURITY DEFINER functions that run as the owner under FORCE RLS.

    The role is the table owner read from pg_class, never `CURRENT_USER`: whoever happens to run the
    migration is not necessarily the owner (a superuser, a member of the owner role, or, the hole of
    issue 9, the runtime role itself). The name is resolved now, but Postgres stores the role's oid, so
    a later `ALTER ROLE ... RENAME` keeps the policy on the same owner. Refused when the owner is the
    runtime role (DATABASE_APP_ROLE): that role would see every org."""
    bind = op.get_bind()
    qualified = f"{schema}.{table}"
    owner = bind.execute(
        sa.text("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = CAST(:t AS regclass)"),
        {"t": qualified},
    ).scalar_one()
    runtime = os.environ.get("DATABASE_APP_ROLE", "") or "cws_app"
    if owner == runtime:
        raise RuntimeError(
            f"{qualified} is owned by the runtime role {runtime}: give its ownership to the owner role "
            f"(REASSIGN OWNED BY {runtime} TO <owner role>) and migrate as that role"
        )
    role = bind.dialect.identifier_preparer.quote(owner)
    check = " WITH CHECK (true)" if with_check else ""
    op.execute(f"DROP POLICY IF EXISTS {name} ON {qualified}")
    op.execute(f"CREATE POLICY {name} ON {qualified} FOR {command} TO {role} USING (true){check}")


def add_event_trace_context(schema: str) -> None:
    """The outbox's `trace_context` (a W3C traceparent, issue 14's tracing): nullable, no default, so
    adding it rewrites no row and takes only a brief lock."""
    op.add_column(
        "event_outbox", sa.Column("trace_context", sa.String(length=64), nullable=True), schema=schema
    )


def drop_event_trace_context(schema: str) -> None:
    op.drop_column("event_outbox", "trace_context", schema=schema)
