"""Status counts: an index per list filter that leads with the filter, then the status.

The list's "By status" counts are capped (``intake.triage.status_counts``): each status counts at
most the cap's rows, and with these indexes that is one index range per status under any single
filter, however large the table. They also serve a filter together with a status, in keyset order
(e.g. "assigned to me, in review, newest first"). The status alone and the date range already
have ``ix_submissions_status_received``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATUS_INDEXES = {
    "ix_submissions_cancer_status_received": ["cancer_type", "status", "received_at", "id"],
    "ix_submissions_age_band_status_received": ["age_band", "status", "received_at", "id"],
    "ix_submissions_source_status_received": ["source", "status", "received_at", "id"],
    "ix_submissions_assignee_status_received": ["assignee_id", "status", "received_at", "id"],
}


def upgrade() -> None:
    # Plain CREATE INDEX on both databases, like 0004: on PostgreSQL it holds writes to the
    # table while it builds (seconds at a million rows); no table rebuild on SQLite.
    for name, columns in STATUS_INDEXES.items():
        op.create_index(name, "submissions", columns)


def downgrade() -> None:
    for name in STATUS_INDEXES:
        op.drop_index(name, table_name="submissions")
