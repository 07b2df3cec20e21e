"""Staff credentials the account's owner chooses: enrolment secret made at first sign-in,
a forced password change, and server-side staff sessions the owner can list and end.

- ``users.totp_secret`` becomes nullable: a new account has no secret until its owner starts
  enrolment, so whoever created the account never knows the secret in use. Secrets of accounts
  that have not enrolled yet were shown to their creator: they are cleared, and a fresh one is
  made at the owner's next sign-in.
- ``users.password_change_required``: new accounts choose their own password at first sign-in.
  Every existing account is forced too: before this revision no one could change their own
  password, so each is still the one its creator chose (and the creator was shown its TOTP
  secret). After the owner's next sign-in the creator no longer knows the password; an admin
  should then reset two-step verification of those accounts (docs/operations.md).
- ``staff_sessions``: one row per signed-in session (SHA-256 of the cookie's token).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import base64
import secrets

from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.alter_column("totp_secret", existing_type=sa.String(length=64), nullable=True)
        batch.add_column(
            sa.Column(
                "password_change_required",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
        batch.add_column(
            sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("users") as batch:
        batch.alter_column(
            "password_change_required", existing_type=sa.Boolean(), server_default=None
        )
    op.execute("UPDATE users SET totp_secret = NULL WHERE totp_enrolled_at IS NULL")
    op.execute("UPDATE users SET password_change_required = true")
    op.create_table(
        "staff_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("user_agent", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=45), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_staff_sessions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_staff_sessions_token_hash")),
    )
    op.create_index(
        "ix_staff_sessions_user_started", "staff_sessions", ["user_id", "started_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_staff_sessions_user_started", table_name="staff_sessions")
    op.drop_table("staff_sessions")
    # A cleared secret cannot come back: give each such account a fresh random one (never
    # shown), so the old NOT NULL holds; those owners need a 2FA reset after a downgrade.
    users = sa.table("users", sa.column("id", sa.Integer), sa.column("totp_secret", sa.String))
    connection = op.get_bind()
    for (user_id,) in connection.execute(
        sa.select(users.c.id).where(users.c.totp_secret.is_(None))
    ).all():
        secret = base64.b32encode(secrets.token_bytes(20)).decode()
        connection.execute(
            users.update().where(users.c.id == user_id).values(totp_secret=secret)
        )
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_changed_at")
        batch.drop_column("password_change_required")
        batch.alter_column("totp_secret", existing_type=sa.String(length=64), nullable=False)
