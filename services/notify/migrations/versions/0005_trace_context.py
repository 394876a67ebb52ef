"""notify: the event outbox's and the delivery outbox's trace context (tracing, issue 14)

The relay publishes an event later and from another task than the request that raised it; the
row keeps that request's W3C traceparent so the publish, the consumers and what they do join its trace.
Nullable and without a default: adding it rewrites no row.

Revision ID: 0005_trace_context
Revises: 0004_outbox_subjects
"""

import sqlalchemy as sa
from alembic import op

from libs.common.migration_helpers import add_event_trace_context, drop_event_trace_context

revision = "0005_trace_context"
down_revision = "0004_outbox_subjects"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_event_trace_context("notify")
    # The delivery outbox keeps the context of the work that enqueued a send (a consumer handling
    # booking.confirmed), and its request id, so the email's delivery joins that trace.
    op.add_column(
        "outbox_events", sa.Column("trace_context", sa.String(length=64), nullable=True), schema="notify"
    )
    op.add_column(
        "outbox_events", sa.Column("request_id", sa.String(length=100), nullable=True), schema="notify"
    )


def downgrade() -> None:
    op.drop_column("outbox_events", "request_id", schema="notify")
    op.drop_column("outbox_events", "trace_context", schema="notify")
    drop_event_trace_context("notify")
