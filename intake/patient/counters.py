"""Daily counters that carry no identity (how many bot submissions were discarded, ...)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from intake.models import DailyCount


def count(session: Session, name: str, by: int = 1) -> None:
    """Add ``by`` to today's (UTC) counter ``name`` in one upsert; the caller commits.

    One statement, so two workers counting the first hit of the day cannot collide.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(DailyCount).values(day=datetime.now(UTC).date(), name=name, count=by)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[DailyCount.day, DailyCount.name],
            set_={"count": DailyCount.count + statement.excluded.count},
        )
    )
