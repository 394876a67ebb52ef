"""iam: an index on admin_audit_logs (org_id, resource_type, resource_id, created_at)

A booking's or an invoice's timeline (ViewsService.GetTimeline, issue 13) reads the newest audit
entries of one resource; without it that read filters every audit entry the org ever had
(ix_admin_audit_logs_org_created serves the org, not the resource).

Revision ID: 0007_audit_resource_index
Revises: 0006_temp_passwords
"""

from alembic import op

revision = "0007_audit_resource_index"
down_revision = "0006_temp_passwords"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_admin_audit_logs_org_resource",
        "admin_audit_logs",
        ["org_id", "resource_type", "resource_id", "created_at"],
        schema="iam",
    )


def downgrade() -> None:
    op.drop_index("ix_admin_audit_logs_org_resource", table_name="admin_audit_logs", schema="iam")
