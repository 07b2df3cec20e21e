"""The accounting of disclosures: which submissions each export batch sent.

One ``disclosures`` row per exported submission, naming its batch's ``submissions.disclosed``
audit row (which holds the SHA-256 of the batch's references). A chained audit row per
submission cost an export of 100k rows a third of its speed and flooded the trail; these rows
are a single small B-tree (``WITHOUT ROWID`` on SQLite), keyed by the submission first.
``event_id`` has no foreign key, so the audit table's own guards (append-only, no TRUNCATE)
stay the first thing a change to it meets; ``audit verify`` reports an id naming no batch.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "disclosures",
        sa.Column("submission_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_disclosures_submission_id_submissions"),
        ),
        sa.PrimaryKeyConstraint("submission_id", "event_id", name=op.f("pk_disclosures")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("disclosures")
