"""Triage: assignee, sealed notes, and the indexes the list's filters walk.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FILTER_INDEXES = {
    "ix_submissions_age_band_received": ["age_band", "received_at", "id"],
    "ix_submissions_source_received": ["source", "received_at", "id"],
    "ix_submissions_assignee_received": ["assignee_id", "received_at", "id"],
}


def upgrade() -> None:
    # batch mode: SQLite cannot add a foreign key with ALTER TABLE; it rebuilds the table
    # (keeping 0001's check constraint and indexes), PostgreSQL gets plain ALTERs.
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("assignee_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_submissions_assignee_id_users", "users", ["assignee_id"], ["id"]
        )
    for name, columns in FILTER_INDEXES.items():
        op.create_index(name, "submissions", columns)
    op.create_index("ix_audit_events_target", "audit_events", ["target"])
    op.create_index(
        "ix_submissions_expiry_pending",
        "submissions",
        ["authorization_expires_at"],
        sqlite_where=sa.text("shredded_at IS NULL"),
        postgresql_where=sa.text("shredded_at IS NULL"),
    )
    op.create_table(
        "notes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("submission_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("sealed_payload", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint("sealed_payload IS NOT NULL", name=op.f("ck_notes_sealed")),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_notes_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"], ["submissions.id"], name=op.f("fk_notes_submission_id_submissions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notes")),
    )
    op.create_index("ix_notes_key_id", "notes", ["key_id"])
    op.create_index("ix_notes_submission_created", "notes", ["submission_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_notes_submission_created", table_name="notes")
    op.drop_index("ix_notes_key_id", table_name="notes")
    op.drop_table("notes")
    op.drop_index("ix_audit_events_target", table_name="audit_events")
    op.drop_index("ix_submissions_expiry_pending", table_name="submissions")
    for name in FILTER_INDEXES:
        op.drop_index(name, table_name="submissions")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_constraint("fk_submissions_assignee_id_users", type_="foreignkey")
        batch.drop_column("assignee_id")
