"""Monthly budgets of API keys: the month's spend must stay below. A decision counts with its actual cost where the
gateway learnt it from the upstream's usage, else with its estimated cost (a request that named its model directly
has only the actual one).

The spend is what the decision log holds for the key this calendar month (UTC) plus what is still queued for it, so a
refusal needs no restart and no cache; a key without a budget costs nothing to check.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.api.auth import Caller
from service.metrics import Metrics
from service.routing.decision_log import DecisionLog
from service.runtime import Runtime
from service.store.orm import RoutingDecision


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def stored_spend(session: Session, key_name: str, since: datetime) -> float:
    total = session.scalar(
        select(
            func.coalesce(
                func.sum(func.coalesce(RoutingDecision.actual_cost_usd, RoutingDecision.estimated_cost_usd)), 0.0
            )
        ).where(RoutingDecision.key_name == key_name, RoutingDecision.created_at >= since)
    )
    return float(total or 0.0)


def month_spend(runtime: Runtime, log: DecisionLog, key_name: str, now: datetime | None = None) -> float:
    """Estimated USD routed by this key since the start of the month (queued decisions included)."""
    since = month_start(now or datetime.now(UTC))
    queued = log.pending_cost(key_name, since)  # first: a row flushed meanwhile is counted twice, never missed
    with runtime.sessions() as session:
        return stored_spend(session, key_name, since) + queued


def enforce_budget(runtime: Runtime, log: DecisionLog, metrics: Metrics, caller: Caller) -> None:
    """429 once the key's estimated spend this month has reached its monthly budget."""
    if caller.name is None or caller.monthly_budget_usd is None:
        return
    now = datetime.now(UTC)
    spent = month_spend(runtime, log, caller.name, now)
    if spent < caller.monthly_budget_usd:
        return
    metrics.budget_refusals.labels(caller.name).inc()
    resets = next_month_start(now)
    raise HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=(
            f"monthly budget exhausted: key {caller.name!r} has routed an estimated ${spent:.6f} this month "
            f"(budget ${caller.monthly_budget_usd:.6f}); it resets {resets:%Y-%m-%d} 00:00 UTC"
        ),
        headers={"Retry-After": str(max(1, int((resets - now).total_seconds())))},
    )
