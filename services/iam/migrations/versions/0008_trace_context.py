"""iam: the event outbox's trace context (tracing, issue 14)

The relay publishes an event later and from another task than the request that raised it; the
row keeps that request's W3C traceparent so the publish, the consumers and what they do join its trace.
Nullable and without a default: adding it rewrites no row.

Revision ID: 0008_trace_context
Revises: 0007_audit_resource_index
"""

from libs.common.migration_helpers import add_event_trace_context, drop_event_trace_context

revision = "0008_trace_context"
down_revision = "0007_audit_resource_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_event_trace_context("iam")


def downgrade() -> None:
    drop_event_trace_context("iam")
