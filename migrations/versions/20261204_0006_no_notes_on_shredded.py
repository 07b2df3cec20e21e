"""Shredded means shredded: no sealed child row (a note) on a crypto-shredded submission.

The services already lock the submission and re-check it before sealing a note, and the shred
deletes the notes in its own transaction (``intake.audit`` documents the lock order). These
triggers make the database refuse what a bug or a writer outside the app could still do:

- a note inserted onto a shredded submission, or moved onto one (``UPDATE OF submission_id``);
- a submission marked shredded while notes still belong to it.

On PostgreSQL the note trigger reads the submission ``FOR SHARE``: a shred in flight holds the
row ``FOR UPDATE``, so the insert waits for it and then sees its outcome (READ COMMITTED re-reads
a row it waited for), instead of passing on the snapshot and leaving a note behind the shred.
Both refusals are integrity errors (SQLite ``RAISE(ABORT)``, PostgreSQL SQLSTATE 23514).

SQLite drops a table's triggers when batch mode rebuilds it: a later migration that rebuilds
``submissions`` or ``notes`` must create them again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NOTE_REFUSED = "notes: the submission is crypto-shredded"
SHRED_REFUSED = "submissions: shredding would leave notes behind"

SQLITE_TRIGGERS = {
    "notes_refuse_shredded_insert": f"""
        CREATE TRIGGER notes_refuse_shredded_insert BEFORE INSERT ON notes
        WHEN EXISTS (SELECT 1 FROM submissions
                     WHERE id = NEW.submission_id AND shredded_at IS NOT NULL)
        BEGIN SELECT RAISE(ABORT, '{NOTE_REFUSED}'); END""",
    "notes_refuse_shredded_move": f"""
        CREATE TRIGGER notes_refuse_shredded_move BEFORE UPDATE OF submission_id ON notes
        WHEN EXISTS (SELECT 1 FROM submissions
                     WHERE id = NEW.submission_id AND shredded_at IS NOT NULL)
        BEGIN SELECT RAISE(ABORT, '{NOTE_REFUSED}'); END""",
    "submissions_shred_leaves_no_notes": f"""
        CREATE TRIGGER submissions_shred_leaves_no_notes BEFORE UPDATE OF shredded_at ON submissions
        WHEN NEW.shredded_at IS NOT NULL
             AND EXISTS (SELECT 1 FROM notes WHERE submission_id = NEW.id)
        BEGIN SELECT RAISE(ABORT, '{SHRED_REFUSED}'); END""",
}

POSTGRES_FUNCTIONS = {
    "notes_refuse_shredded_submission": f"""
        CREATE FUNCTION notes_refuse_shredded_submission() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE gone timestamptz;
        BEGIN
          SELECT shredded_at INTO gone FROM submissions WHERE id = NEW.submission_id FOR SHARE;
          IF gone IS NOT NULL THEN
            RAISE EXCEPTION '{NOTE_REFUSED}' USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$""",
    "submissions_shred_leaves_no_notes": f"""
        CREATE FUNCTION submissions_shred_leaves_no_notes() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM notes WHERE submission_id = NEW.id) THEN
            RAISE EXCEPTION '{SHRED_REFUSED}' USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$""",
}
POSTGRES_TRIGGERS = {
    ("notes_refuse_shredded_submission", "notes"): """
        CREATE TRIGGER notes_refuse_shredded_submission
        BEFORE INSERT OR UPDATE OF submission_id ON notes
        FOR EACH ROW EXECUTE FUNCTION notes_refuse_shredded_submission()""",
    ("submissions_shred_leaves_no_notes", "submissions"): """
        CREATE TRIGGER submissions_shred_leaves_no_notes
        BEFORE UPDATE OF shredded_at ON submissions
        FOR EACH ROW WHEN (NEW.shredded_at IS NOT NULL)
        EXECUTE FUNCTION submissions_shred_leaves_no_notes()""",
}


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _postgres():
        for statement in (*POSTGRES_FUNCTIONS.values(), *POSTGRES_TRIGGERS.values()):
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS.values():
            op.execute(statement)


def downgrade() -> None:
    if _postgres():
        for name, table in POSTGRES_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        for name in POSTGRES_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
