"""Writes routing decisions to the database off the request path, in batches; keeps them when the DB is down."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from service.store.orm import DecisionDimension, DecisionQuery, RoutingDecision
from service.store.upsert import upsert

logger = logging.getLogger(__name__)

# The database could not be reached or is busy: retry later. Any other error is about the rows themselves.
UNREACHABLE = (OperationalError, InterfaceError)


class DecisionLog:
    """A bounded in-memory queue drained by a writer thread (or by `flush()`)."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        flush_interval_s: float | None = 0.5,
        max_pending: int = 100_000,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._interval = flush_interval_s
        self._pending: deque[dict[str, Any]] = deque()
        self._max_pending = max_pending
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        if self._interval is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    def append(self, row: dict[str, Any]) -> None:
        with self._lock:
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                if self._on_drop:
                    self._on_drop(1)
            self._pending.append(row)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_cost(self, key_name: str, since: datetime) -> float:
        """Cost of this key's decisions still queued, actual where known (the budget check adds it to the stored
        spend)."""
        with self._lock:
            return sum(_spend(r) for r in self._pending if r.get("key_name") == key_name and r["created_at"] >= since)

    def flush(self) -> int:
        """Writes what is queued. While the database is unreachable the rows stay queued for the next try; a row the
        database refuses for its own content is dropped (counted, logged), so it never holds up the rows behind it."""
        with self._flush_lock:
            with self._lock:
                batch = list(self._pending)
            if not batch:
                return 0
            # Rows from /v1/route and from the gateway carry different columns; one insert needs the same keys.
            columns = {key for row in batch for key in row}
            batch = [dict.fromkeys(columns) | row for row in batch]
            try:
                self._write_in_one(batch)
            except UNREACHABLE as exc:
                self._keep(batch, exc)
                return 0
            except Exception:  # noqa: BLE001 - some row is unwritable: find it, write the others
                return self._write_each(batch)
            self._done(len(batch))
            self.last_error = None
            return len(batch)

    def _write_in_one(self, rows: list[dict[str, Any]]) -> None:
        with self._sessions() as session, session.begin():
            _write(session, rows)

    def _write_each(self, batch: list[dict[str, Any]]) -> int:
        """Row by row, dropping the ones refused; the rest stay queued if the database turns out to be unreachable.
        Returns the rows written."""
        written, dropped = 0, 0
        for row in batch:
            try:
                self._write_in_one([row])
                written += 1
            except UNREACHABLE as exc:
                self._keep(batch[written + dropped :], exc)
                self._done(written + dropped)
                return written
            except Exception as exc:  # noqa: BLE001 - a row the database cannot hold is not retried forever
                dropped += 1
                self.last_error = f"dropped an unwritable decision ({type(exc).__name__}: {exc})".splitlines()[0]
                logger.error("decision log: %s", self.last_error)
        self._done(len(batch))
        if dropped and self._on_drop:
            self._on_drop(dropped)
        return written

    def _keep(self, rows: list[dict[str, Any]], exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        logger.warning("decision log: %d rows kept for retry (%s)", len(rows), self.last_error)

    def _done(self, count: int) -> None:
        with self._lock:
            for _ in range(count):
                self._pending.popleft()

    def _run(self) -> None:
        assert self._interval is not None
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the writer must outlive any one batch
                logger.exception("decision log: flush failed")


def _spend(row: dict[str, Any]) -> float:
    """A queued decision's cost as the stored spend counts it (COALESCE(actual, estimated)): an actual 0 is 0."""
    actual = row.get("actual_cost_usd")
    return float(actual) if actual is not None else float(row.get("estimated_cost_usd") or 0.0)


def _write(session: Session, batch: list[dict[str, Any]]) -> None:
    """A queued row is a decision plus private fields: `_vector` and `_text` (decision_queries) and `_dimensions`
    ((dimension id, weight) pairs, decision_dimensions), kept for feedback until the retention purge."""
    decisions = [{k: v for k, v in row.items() if not k.startswith("_")} for row in batch]
    upsert(session, RoutingDecision.__table__, decisions, keys=("id",))  # type: ignore[arg-type]
    queries = [
        {"decision_id": r["id"], "created_at": r["created_at"], "vector": r["_vector"], "query_text": r.get("_text")}
        for r in batch
        if r.get("_vector") is not None
    ]
    upsert(session, DecisionQuery.__table__, queries, keys=("decision_id",))  # type: ignore[arg-type]
    dimensions = [
        {"decision_id": r["id"], "dimension_id": d, "weight": w, "created_at": r["created_at"]}
        for r in batch
        for d, w in r.get("_dimensions") or ()
    ]
    upsert(session, DecisionDimension.__table__, dimensions, keys=("decision_id", "dimension_id"))  # type: ignore[arg-type]
