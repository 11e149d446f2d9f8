"""Idempotent bulk writes: INSERT ... ON CONFLICT for Postgres and SQLite alike.

Large Postgres batches go through COPY into a temporary table and one INSERT ... SELECT, which is
an order of magnitude faster than row-by-row executemany (208k outcome rows: ~2 s instead of ~15 s).
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

COPY_THRESHOLD = 2_000


def upsert(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    update: Sequence[str] = (),
    chunk: int = 20_000,
) -> None:
    """Insert rows; on a key conflict update the `update` columns (or leave the row alone)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    has_json = any(isinstance(c.type, JSON) for c in table.columns)
    if dialect == "postgresql" and len(rows) >= COPY_THRESHOLD and not has_json:
        _copy_upsert(session, table, rows, keys, update)
        return
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in update})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    for start in range(0, len(rows), chunk):
        session.execute(stmt, list(rows[start : start + chunk]))


def _copy_upsert(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str], update: Sequence[str]
) -> None:
    columns = list(rows[0])
    quoted = ", ".join(f'"{c}"' for c in columns)
    staging = f"staging_{table.name}"
    conflict = ", ".join(f'"{k}"' for k in keys)
    action = "DO UPDATE SET " + ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in update) if update else "DO NOTHING"
    raw = session.connection().connection.driver_connection
    with raw.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(
            f'CREATE TEMP TABLE "{staging}" ON COMMIT DROP AS SELECT {quoted} FROM "{table.name}" WITH NO DATA'
        )
        with cursor.copy(f'COPY "{staging}" ({quoted}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
        cursor.execute(
            f'INSERT INTO "{table.name}" ({quoted}) SELECT {quoted} FROM "{staging}" ON CONFLICT ({conflict}) {action}'
        )
        cursor.execute(f'DROP TABLE "{staging}"')
