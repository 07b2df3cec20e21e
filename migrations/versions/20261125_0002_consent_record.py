"""Consent record, idempotency and withdrawal columns; daily counters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN and a unique index: no table rebuild on SQLite, so the check
    # constraint and indexes of 0001 stay exactly as they are.
    op.add_column("submissions", sa.Column("consent_text_sha256", sa.String(64), nullable=True))
    op.add_column("submissions", sa.Column("signer_role", sa.String(24), nullable=True))
    op.add_column("submissions", sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("submissions", sa.Column("submit_token_hash", sa.LargeBinary(32), nullable=True))
    op.add_column(
        "submissions", sa.Column("withdrawal_code_hash", sa.LargeBinary(32), nullable=True)
    )
    op.create_index(
        "ix_submissions_submit_token_hash", "submissions", ["submit_token_hash"], unique=True
    )
    op.create_table(
        "daily_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "name", name="pk_daily_counts"),
    )


def downgrade() -> None:
    op.drop_table("daily_counts")
    op.drop_index("ix_submissions_submit_token_hash", table_name="submissions")
    with op.batch_alter_table("submissions") as batch:
        for column in (
            "withdrawal_code_hash",
            "submit_token_hash",
            "signed_at",
            "signer_role",
            "consent_text_sha256",
        ):
            batch.drop_column(column)
