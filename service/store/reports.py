"""Admin reports: read the SQL views created by migration 0003, with filters, for the API and the CLI.

The views are the contract (README "Reporting" documents their columns); this module only filters and orders them.
SQLite has no percentile function, so the `latency` view leaves p50/p95/p99 empty there and they are computed here
with the same linear interpolation as Postgres' percentile_cont.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from service.errors import NotFoundError


class ReportError(ValueError):
    """A filter the report cannot apply, or an operation the database cannot do; the message names the field."""


@dataclass(frozen=True)
class ReportSpec:
    time: Literal["hour", "day"] | None
    filters: frozenset[str]
    order: tuple[str, ...]
    about: str


REPORTS: dict[str, ReportSpec] = {
    "routing_volume": ReportSpec(
        "hour", frozenset({"caller", "model"}), ("hour", "caller", "model"), "decisions per model, caller and hour"
    ),
    "cost_savings": ReportSpec(
        "day",
        frozenset({"caller", "model"}),
        ("day", "caller", "model"),
        "routed cost vs the most expensive and the best-on-average model",
    ),
    "traffic_mix": ReportSpec(
        "day", frozenset({"caller"}), ("day", "caller", "kind", "dimension"), "capability and domain mix of queries"
    ),
    "model_quality": ReportSpec(
        "day",
        frozenset({"caller", "model"}),
        ("day", "caller", "model", "kind", "dimension"),
        "observed accuracy from feedback vs predicted P(correct)",
    ),
    "profile_matrix": ReportSpec(None, frozenset({"model"}), ("model", "kind", "dimension"), "model x dimension"),
    "latency": ReportSpec("hour", frozenset(), ("hour",), "p50/p95/p99 routing latency per hour"),
}
REPORT_VIEWS = tuple(REPORTS)
PERCENTILES = {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0}


@dataclass(frozen=True)
class ReportFilters:
    start: datetime | None = None  # `from`: buckets that end after it
    end: datetime | None = None  # `to`: buckets that start before it
    caller: str | None = None
    model: str | None = None


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def _floor(moment: datetime, unit: str) -> datetime:
    moment = _naive_utc(moment)
    return moment.replace(minute=0, second=0, microsecond=0) if unit == "hour" else datetime(*moment.timetuple()[:3])


def _ceil(moment: datetime, unit: str) -> datetime:
    floor = _floor(moment, unit)
    if floor == _naive_utc(moment):
        return floor
    return floor + (timedelta(hours=1) if unit == "hour" else timedelta(days=1))


def _bucket_param(moment: datetime, unit: str, dialect: str) -> object:
    if dialect == "postgresql":
        return moment if unit == "hour" else moment.date()
    return moment.strftime("%Y-%m-%d %H:00:00") if unit == "hour" else moment.strftime("%Y-%m-%d")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", value):
        return value.replace(" ", "T")
    return value


def run_report(
    session: Session | Connection, name: str, filters: ReportFilters
) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of one report view under the filters; rows hold JSON-ready values."""
    spec = REPORTS.get(name)
    if spec is None:
        raise NotFoundError(f"name: no report {name!r}; reports: {', '.join(REPORTS)}")
    dialect = session.get_bind().dialect.name if isinstance(session, Session) else session.dialect.name
    where: list[str] = []
    params: dict[str, object] = {}
    for field, value in (("from", filters.start), ("to", filters.end)):
        if value is None:
            continue
        if spec.time is None:
            raise ReportError(f"{field}: report {name} has no time column")
        bound = _floor(value, spec.time) if field == "from" else _ceil(value, spec.time)
        where.append(f"{spec.time} {'>=' if field == 'from' else '<'} :{field}")
        params[field] = _bucket_param(bound, spec.time, dialect)
    for field, wanted in (("caller", filters.caller), ("model", filters.model)):
        if wanted is None:
            continue
        if field not in spec.filters:
            raise ReportError(f"{field}: report {name} cannot be filtered by {field}")
        where.append(f"{field} = :{field}")
        params[field] = wanted
    sql = f"SELECT * FROM {name}"  # name comes from REPORTS, never from the request
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY " + ", ".join(spec.order)
    result = session.execute(text(sql), params)
    columns = list(result.keys())
    rows = [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in result]
    if name == "latency" and dialect != "postgresql":
        _fill_percentiles(session, rows, params)
    return columns, rows


def _fill_percentiles(session: Session | Connection, rows: list[dict[str, Any]], params: dict[str, object]) -> None:
    """SQLite only: p50/p95/p99 per hour in Python (numpy's 'linear' method is percentile_cont's interpolation)."""
    hour = "strftime('%Y-%m-%d %H:00:00', created_at)"
    where = [f"{hour} {op} :{field}" for field, op in (("from", ">="), ("to", "<")) if field in params]
    sql = f"SELECT {hour}, latency_ms FROM routing_decisions" + (" WHERE " + " AND ".join(where) if where else "")
    by_hour: dict[str, list[float]] = defaultdict(list)
    for bucket, latency in session.execute(text(sql), params):
        by_hour[_plain(bucket)].append(float(latency))
    for row in rows:
        values = np.asarray(by_hour.get(row["hour"], []), np.float64)
        if values.size:
            for column, q in PERCENTILES.items():
                row[column] = float(np.percentile(values, q, method="linear"))


ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def grant_reporting(connection: Connection, role: str) -> list[str]:
    """Postgres: SELECT on the report views (and USAGE on their schema) for an existing role, and nothing else."""
    if connection.dialect.name != "postgresql":
        raise ReportError("role: grant-reporting needs PostgreSQL (SQLite has no roles)")
    if not ROLE_NAME.match(role):
        raise ReportError("role: letters, digits and '_', starting with a letter or '_', at most 63")
    if connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}) is None:
        raise NotFoundError(f"role: no Postgres role {role!r} (CREATE ROLE {role} LOGIN PASSWORD '...' first)")
    schema = connection.scalar(text("SELECT current_schema()"))
    connection.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
    for view in REPORT_VIEWS:
        connection.execute(text(f'GRANT SELECT ON "{schema}"."{view}" TO "{role}"'))
    return list(REPORT_VIEWS)
