"""Feedback reloads are coalesced: writes that arrive during a reload share the next one, and none is missed."""

from __future__ import annotations

import threading

from service.routing.reloader import CoalescedReload


def test_writes_during_a_reload_share_the_next_one_and_each_waits_for_a_later_reload() -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def reload() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            started.set()
            release.wait(10)

    reloader = CoalescedReload(reload)
    first = reloader.request()
    assert started.wait(10)
    later = [reloader.request() for _ in range(5)]  # arrive while the first reload runs
    assert not reloader.wait(later[0], timeout_s=0.05)  # the running reload began before their writes
    release.set()
    assert reloader.wait(first, 10) and all(reloader.wait(t, 10) for t in later)
    assert len(calls) == 2


def test_a_failed_reload_is_reported_and_the_next_request_reloads_again() -> None:
    outcomes = iter([RuntimeError("store down"), None])

    def reload() -> None:
        error = next(outcomes)
        if error is not None:
            raise error

    reloader = CoalescedReload(reload)
    assert reloader.wait(reloader.request(), 10)
    assert reloader.last_error == "RuntimeError"
    assert reloader.wait(reloader.request(), 10)
    assert reloader.last_error is None
