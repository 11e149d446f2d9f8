"""Keeps Qdrant in step with a database transaction: vectors written for one that does not commit are undone.

Write paths call `record(session, store, collection, ids)` before they upsert points for rows of `session`'s
transaction. The previous state of those points is saved (absent, or its vector and payload); when the transaction
commits the journal is dropped, when it ends any other way (rollback, an error in COMMIT, a session closed without
committing) the points are restored: new ones deleted, overwritten ones put back. No point outlives a rolled-back
import, and SQLite's reuse of rolled-back ids cannot attach a stale vector to a new row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from service.store.vector_store import VectorStore

logger = logging.getLogger(__name__)
_KEY = "vector_journal"

Saved = tuple[list[float], dict[str, Any]] | None


class VectorJournal:
    """Previous states of the points a transaction touched, per store and collection."""

    def __init__(self) -> None:
        self._saved: dict[tuple[int, str], dict[int, Saved]] = {}
        self._stores: dict[int, VectorStore] = {}

    def record(self, store: VectorStore, collection: str, ids: Sequence[int]) -> None:
        saved = self._saved.setdefault((id(store), collection), {})
        self._stores[id(store)] = store
        fresh = [int(i) for i in ids if int(i) not in saved]
        if not fresh:
            return
        before = store.stored_points(collection, fresh)
        for point_id in fresh:
            saved[point_id] = before.get(point_id)

    @property
    def touched(self) -> int:
        return sum(len(saved) for saved in self._saved.values())

    def undo(self) -> None:
        for (store_id, collection), saved in self._saved.items():
            store = self._stores[store_id]
            new = [i for i, old in saved.items() if old is None]
            if new:
                store.delete(collection, new)
            old_points = [(i, old) for i, old in saved.items() if old is not None]
            if old_points:
                store.upsert(
                    collection,
                    [i for i, _ in old_points],
                    np.asarray([old[0] for _, old in old_points], dtype=np.float32),
                    [old[1] for _, old in old_points],
                )
        self._saved.clear()


def record(session: Session, store: VectorStore, collection: str, ids: Sequence[int]) -> None:
    """Call before writing points that belong to rows of `session`'s open transaction."""
    journal = session.info.get(_KEY)
    if journal is None:
        journal = session.info[_KEY] = VectorJournal()
    journal.record(store, collection, ids)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    session.info.pop(_KEY, None)


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None or transaction.nested:
        return
    journal: VectorJournal | None = session.info.pop(_KEY, None)
    if journal is None or not journal.touched:
        return
    touched = journal.touched
    try:
        journal.undo()
        logger.info("transaction did not commit: restored %d vector points", touched)
    except Exception as exc:  # noqa: BLE001 - never mask the error that ended the transaction
        logger.error("could not restore vector points after a rollback (run capprof reindex): %s", exc)
