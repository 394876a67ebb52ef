"""booking: bind an Idempotency-Key to a fingerprint of the request that first used it

A replay is answered only to a request whose fingerprint (sha256 of the canonical request fields,
and for staff routes the caller's principal) matches the stored one; rows from before this
revision keep NULL and are never replayed (see docs/booking.md, "Idempotency keys").

Revision ID: 0004_idempotency_fingerprint
Revises: 0003_owner_role_policies
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_idempotency_fingerprint"
down_revision = "0003_owner_role_policies"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("leads", sa.Column("idempotency_fingerprint", sa.Text(), nullable=True), schema="booking")
    op.add_column(
        "bookings", sa.Column("idempotency_fingerprint", sa.Text(), nullable=True), schema="booking"
    )


def downgrade() -> None:
    op.drop_column("bookings", "idempotency_fingerprint", schema="booking")
    op.drop_column("leads", "idempotency_fingerprint", schema="booking")
