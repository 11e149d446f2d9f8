"""Coalesced refreshes of the routing state: feedback arriving while a refresh runs shares the next one.

Even an incremental refresh (one model's records) costs tens of milliseconds, so one per feedback, waited for in
the request, would cap feedback and hold a worker thread each. Each caller
gets a ticket (and may wait for a reload that started after its write); callers that arrive meanwhile are served by
that same next reload.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class CoalescedReload:
    def __init__(self, reload: Callable[[], None]) -> None:
        self._reload = reload
        self._changed = threading.Condition()
        self._wanted = 0  # tickets handed out
        self._done = 0  # every ticket up to this one is served by a finished reload
        self._running = False
        self.last_error: str | None = None

    def request(self) -> int:
        """Asks for a reload after the caller's write; returns the ticket to wait for."""
        with self._changed:
            self._wanted += 1
            ticket = self._wanted
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="routing-reload", daemon=True).start()
            return ticket

    def wait(self, ticket: int, timeout_s: float | None = None) -> bool:
        """True once a reload that began after `ticket` was handed out has finished."""
        with self._changed:
            return self._changed.wait_for(lambda: self._done >= ticket, timeout_s)

    def settle(self, timeout_s: float | None = None) -> bool:
        """True once every reload asked for so far has finished (tests, and callers that must see their write)."""
        with self._changed:
            ticket = self._wanted
        return self.wait(ticket, timeout_s)

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._done >= self._wanted:
                    self._running = False
                    return
                target = self._wanted
            try:
                self._reload()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - the next write asks again; routing keeps the old state
                self.last_error = type(exc).__name__
                logger.warning("routing state reload failed: %s", self.last_error)
            with self._changed:
                self._done = target
                self._changed.notify_all()
