"""What each console page shows, read in SQL: aggregates and pages are computed by the database, never by loading
all models or decisions into Python (the pages must stay fast with 10,000 models and a million decisions).

Sort keys come from whitelists (`MODEL_SORTS`); column names never come from a request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from service.store.reports import ReportFilters, run_report

# sort key -> SQL expression over the model page's columns (see `models_page`)
MODEL_SORTS: dict[str, str] = {
    "name": "m.name",
    "provider": "m.provider",
    "input_price": "m.input_usd_per_mtok",
    "output_price": "m.output_usd_per_mtok",
    "status": "m.status",
    "records": "records",
    "accuracy": "mean_accuracy",
    "aptitude": "aptitude",
    "upstream": "upstream",
}
# keys read from the models table alone: the page is cut first and only its rows are aggregated
_PLAIN_SORTS = {"name", "provider", "input_price", "output_price", "status", "upstream"}
HEATMAP_DOMAINS = 12
CALIBRATION_MODELS = 20
USAGE_DAYS = 7  # "most-used" domains: by the traffic of the last week
MIX_TOP = 10
VOLUME_TOP_MODELS = 8


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def current_aptitude_test(session: Session) -> int | None:
    return session.scalar(text("SELECT id FROM aptitude_tests ORDER BY version DESC LIMIT 1"))


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def models_page(session: Session, sort: str, descending: bool, page: int, per_page: int) -> Page:
    """One page of the models table with records, mean accuracy and whether the current aptitude test was taken."""
    order = f"{MODEL_SORTS[sort]} {'DESC' if descending else 'ASC'}"
    nulls = " NULLS LAST" if _dialect(session) == "postgresql" else ""
    test_id = current_aptitude_test(session)
    params = {"limit": per_page, "offset": (page - 1) * per_page, "test_id": test_id if test_id is not None else -1}
    columns = """m.id, m.name, m.provider, m.input_usd_per_mtok, m.output_usd_per_mtok, m.status,
                 CASE WHEN m.endpoint_url IS NULL THEN 0 ELSE 1 END AS upstream"""
    aptitude = """CASE WHEN EXISTS (
                     SELECT 1 FROM aptitude_results ar JOIN aptitude_tasks t ON t.id = ar.task_id
                     WHERE ar.model_id = m.id AND t.test_id = :test_id) THEN 1 ELSE 0 END"""
    if sort in _PLAIN_SORTS:
        upstream_order = order.replace("upstream", "CASE WHEN m.endpoint_url IS NULL THEN 0 ELSE 1 END")
        sql = f"""
            WITH m AS (
                SELECT {columns} FROM models m ORDER BY {upstream_order}{nulls}, m.name LIMIT :limit OFFSET :offset
            )
            SELECT m.*, (SELECT COUNT(*) FROM eval_records r WHERE r.model_id = m.id) AS records,
                   (SELECT AVG(r.score) FROM eval_records r WHERE r.model_id = m.id) AS mean_accuracy,
                   {aptitude} AS aptitude
            FROM m ORDER BY {order}{nulls}, m.name"""
    else:
        sql = f"""
            SELECT {columns}, COALESCE(r.records, 0) AS records, r.mean_accuracy, {aptitude} AS aptitude
            FROM models m
            LEFT JOIN (SELECT model_id, COUNT(*) AS records, AVG(score) AS mean_accuracy
                       FROM eval_records GROUP BY model_id) r ON r.model_id = m.id
            ORDER BY {order}{nulls}, m.name LIMIT :limit OFFSET :offset"""
    rows = [dict(r._mapping) for r in session.execute(text(sql), params)]
    total = session.scalar(text("SELECT COUNT(*) FROM models")) or 0
    return Page(rows, int(total), page, per_page)


def model_detail(session: Session, name: str, routing: Mapping[int, float]) -> dict[str, Any] | None:
    """A model's row, its profile (every capability, its best-supported domains: the share right on its records
    and `routing`'s score, by dimension id), recent decisions and feedback."""
    model = session.execute(
        text(
            """SELECT id, name, provider, input_usd_per_mtok, output_usd_per_mtok, status, endpoint_url,
                      upstream_model, mean_cost_usd FROM models WHERE name = :name"""
        ),
        {"name": name},
    ).first()
    if model is None:
        return None
    profile = session.execute(
        text(
            """SELECT d.id, d.kind, d.name, p.weighted_sum / NULLIF(p.support, 0) AS score, p.support, p.n
               FROM profile_scores p JOIN dimensions d ON d.id = p.dimension_id
               WHERE p.model_id = :id AND p.support > 0
               ORDER BY d.kind, p.support DESC"""
        ),
        {"id": model.id},
    ).all()
    cells = [dict(r._mapping) | {"routing": routing.get(r.id)} for r in profile]
    capabilities = sorted((c for c in cells if c["kind"] == "capability"), key=lambda c: str(c["name"]))
    domains = [c for c in cells if c["kind"] == "domain"][:HEATMAP_DOMAINS]
    records = session.execute(
        text("SELECT COUNT(*) AS n, AVG(score) AS mean FROM eval_records WHERE model_id = :id"), {"id": model.id}
    ).one()
    decisions = session.execute(
        text(
            """SELECT id, created_at, cost_weight, estimated_p_correct, estimated_cost_usd, latency_ms, caller
               FROM routing_decisions WHERE chosen_model = :name ORDER BY created_at DESC LIMIT 20"""
        ),
        {"name": name},
    ).all()
    decision_count = session.scalar(
        text("SELECT COUNT(*) FROM routing_decisions WHERE chosen_model = :name"), {"name": name}
    )
    feedback = session.execute(
        text(
            """SELECT COUNT(*) AS n, AVG(f.score) AS observed, AVG(d.estimated_p_correct) AS predicted
               FROM feedback f JOIN routing_decisions d ON d.id = f.decision_id WHERE f.model = :name"""
        ),
        {"name": name},
    ).one()
    return {
        "model": dict(model._mapping),
        "capabilities": capabilities,
        "domains": domains,
        "records": dict(records._mapping),
        "decisions": [dict(r._mapping) for r in decisions],
        "decision_count": int(decision_count or 0),
        "feedback": dict(feedback._mapping),
    }


@dataclass(frozen=True)
class Heatmap:
    dimensions: list[dict[str, Any]]  # id, kind, name
    models: list[str]
    # (model, dimension id) -> (share right on its records, support, records, routing's score or None)
    cells: dict[tuple[str, int], tuple[float | None, float, int, float | None]]
    page: Page


def heatmap_dimensions(session: Session, domains: int = HEATMAP_DOMAINS) -> list[dict[str, Any]]:
    """Every capability, then the most-used domains: by the last week's routed traffic, topped up by evaluation
    support (the domains the profiles know best) while there is little traffic."""
    capabilities = session.execute(
        text("SELECT id, kind, name FROM dimensions WHERE kind = 'capability' ORDER BY name")
    ).all()
    today = datetime.now(UTC).date()
    _, recent, params = _window(session, today - timedelta(days=USAGE_DAYS - 1), today, "x")
    used = session.execute(
        text(
            f"""SELECT d.id, d.kind, d.name FROM decision_dimensions x JOIN dimensions d ON d.id = x.dimension_id
                WHERE {recent} AND d.kind = 'domain' AND NOT d.catch_all
                GROUP BY d.id, d.kind, d.name ORDER BY SUM(x.weight) DESC, d.name LIMIT :n"""
        ),
        params | {"n": domains},
    ).all()
    chosen = [dict(r._mapping) for r in used]
    if len(chosen) < domains:
        supported = session.execute(
            text(
                """SELECT d.id, d.kind, d.name FROM profile_scores p JOIN dimensions d ON d.id = p.dimension_id
                   WHERE d.kind = 'domain' AND NOT d.catch_all
                   GROUP BY d.id, d.kind, d.name ORDER BY SUM(p.support) DESC, d.name LIMIT :n"""
            ),
            {"n": domains},
        ).all()
        seen = {d["id"] for d in chosen}
        chosen += [dict(r._mapping) for r in supported if r.id not in seen][: domains - len(chosen)]
    return [dict(r._mapping) for r in capabilities] + chosen


def heatmap(session: Session, page: int, per_page: int, routing: Callable[[str], Mapping[int, float]]) -> Heatmap:
    """A page of models x dimensions; `routing(model)` gives the scores routing uses (RouterState.routing_profile)."""
    dimensions = heatmap_dimensions(session)
    models = session.execute(
        text("SELECT id, name FROM models ORDER BY name LIMIT :limit OFFSET :offset"),
        {"limit": per_page, "offset": (page - 1) * per_page},
    ).all()
    total = int(session.scalar(text("SELECT COUNT(*) FROM models")) or 0)
    cells: dict[tuple[str, int], tuple[float | None, float, int, float | None]] = {}
    if models and dimensions:
        used = {m.name: routing(m.name) for m in models}
        query = text(
            """SELECT m.name, p.dimension_id, p.weighted_sum / NULLIF(p.support, 0) AS score, p.support, p.n
               FROM profile_scores p JOIN models m ON m.id = p.model_id
               WHERE p.model_id IN :models AND p.dimension_id IN :dims"""
        ).bindparams(bindparam("models", expanding=True), bindparam("dims", expanding=True))
        for row in session.execute(query, {"models": [m.id for m in models], "dims": [d["id"] for d in dimensions]}):
            cells[(row.name, row.dimension_id)] = (
                row.score,
                float(row.support or 0),
                int(row.n or 0),
                used[row.name].get(row.dimension_id),
            )
    return Heatmap(dimensions, [m.name for m in models], cells, Page([], total, page, per_page))


def _days(start: date, end: date) -> list[str]:
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _day_text(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)[:10]


def _window(session: Session, start: date, end: date, table: str) -> tuple[str, str, dict[str, object]]:
    """(UTC day expression, WHERE clause, params) selecting `table`'s rows created in [start, end] (whole UTC days).

    On PostgreSQL the bounds are instants, so the created_at indexes serve a short range."""
    if _dialect(session) == "postgresql":
        begin = datetime.combine(start, time.min, UTC)
        finish = datetime.combine(end + timedelta(days=1), time.min, UTC)
        where = f"{table}.created_at >= :begin AND {table}.created_at < :finish"
        return f"CAST({table}.created_at AT TIME ZONE 'UTC' AS date)", where, {"begin": begin, "finish": finish}
    day = f"date({table}.created_at)"
    return day, f"{day} >= :begin AND {day} <= :finish", {"begin": start.isoformat(), "finish": end.isoformat()}


def traffic(session: Session, start: date, end: date) -> dict[str, Any]:
    """The Traffic page's series over [start, end] (whole UTC days).

    Same definitions as the report views (README "Reporting": routing_volume, cost_savings, traffic_mix, latency),
    read from the decision tables with the date range applied first: the views group all history by hour, caller
    and model before any filter, which took seconds per chart at a million decisions."""
    day, where, params = _window(session, start, end, "d")
    days = _days(start, end)
    top = [
        r.chosen_model
        for r in session.execute(
            text(
                f"""SELECT d.chosen_model, COUNT(*) AS n FROM routing_decisions d
                    WHERE {where} AND d.chosen_model IS NOT NULL
                    GROUP BY d.chosen_model ORDER BY n DESC, d.chosen_model LIMIT {VOLUME_TOP_MODELS}"""
            ),
            params,
        )
    ]
    series: dict[str, dict[str, float]] = {m: {} for m in top}
    if top:
        per_day = session.execute(
            text(
                f"""SELECT {day} AS day, d.chosen_model, COUNT(*) AS n FROM routing_decisions d
                    WHERE {where} AND d.chosen_model IN :top GROUP BY {day}, d.chosen_model"""
            ).bindparams(bindparam("top", expanding=True)),
            params | {"top": top},
        )
        for row in per_day:
            series[row.chosen_model][_day_text(row.day)] = float(row.n)
    # cost_savings' definitions: routed = actual (gateway) else feedback's cost else the estimate
    savings_rows = {
        _day_text(r.day): r
        for r in session.execute(
            text(
                f"""SELECT {day} AS day, COUNT(*) AS decisions,
                           SUM(COALESCE(d.actual_cost_usd, f.cost_usd, d.estimated_cost_usd)) AS routed,
                           SUM(d.baseline_best_cost_usd) AS best, SUM(d.baseline_max_cost_usd) AS most_expensive
                    FROM routing_decisions d LEFT JOIN feedback f ON f.decision_id = d.id
                    WHERE {where} GROUP BY {day}"""
            ),
            params,
        )
    }
    volume = [{"label": m, "data": [series[m].get(d, 0.0) for d in days]} for m in top]
    other = [
        (float(savings_rows[d].decisions) if d in savings_rows else 0.0) - sum(series[m].get(d, 0.0) for m in top)
        for d in days
    ]
    if any(other):
        volume.append({"label": "other models", "data": other})

    def column(name: str) -> list[float | None]:
        values: list[float | None] = []
        for d in days:
            value = getattr(savings_rows[d], name) if d in savings_rows else None
            values.append(float(value) if value is not None else None)
        return values

    routed, best = column("routed"), column("best")
    totals = {
        "routed": sum(x for x in routed if x is not None),
        "best": sum(x for x in best if x is not None),
        "decisions": int(sum(float(r.decisions) for r in savings_rows.values())),
    }
    totals["saved"] = totals["best"] - totals["routed"]

    _, mix_where, mix_params = _window(session, start, end, "x")
    weights = session.execute(
        text(
            f"""SELECT x.dimension_id, SUM(x.weight) AS weight FROM decision_dimensions x
                WHERE {mix_where} GROUP BY x.dimension_id"""
        ),
        mix_params,
    ).all()
    names = {r.id: (r.kind, r.name) for r in session.execute(text("SELECT id, kind, name FROM dimensions"))}
    mix: dict[str, list[dict[str, Any]]] = {}
    for kind in ("capability", "domain"):
        rows = [
            (names[r.dimension_id][1], float(r.weight)) for r in weights if names.get(r.dimension_id, ("",))[0] == kind
        ]
        rows.sort(key=lambda item: (-item[1], item[0]))
        mix[kind] = [{"dimension": name, "weight": weight} for name, weight in rows[:MIX_TOP]]

    return {
        "days": days,
        "volume": volume,
        "savings": {"routed": routed, "best": best, "most_expensive": column("most_expensive")},
        "totals": totals,
        "mix": mix,
        "latency": latency(session, start, end),
    }


def latency(session: Session, start: date, end: date) -> dict[str, list[Any]]:
    """p50/p99 routing latency per UTC hour (the latency view's percentile_cont; SQLite: the report's Python)."""
    if _dialect(session) != "postgresql":
        _, report = run_report(
            session,
            "latency",
            ReportFilters(
                start=datetime.combine(start, time.min), end=datetime.combine(end + timedelta(days=1), time.min)
            ),
        )
        return {
            "hours": [r["hour"] for r in report],
            "p50": [r["p50_ms"] for r in report],
            "p99": [r["p99_ms"] for r in report],
        }
    _, where, params = _window(session, start, end, "d")
    hour = "date_trunc('hour', d.created_at AT TIME ZONE 'UTC')"
    rows = session.execute(
        text(
            f"""SELECT {hour} AS hour, percentile_cont(0.5) WITHIN GROUP (ORDER BY d.latency_ms) AS p50,
                       percentile_cont(0.99) WITHIN GROUP (ORDER BY d.latency_ms) AS p99
                FROM routing_decisions d WHERE {where} GROUP BY {hour} ORDER BY hour"""
        ),
        params,
    ).all()
    return {
        "hours": [r.hour.strftime("%Y-%m-%dT%H:%M:%S") for r in rows],
        "p50": [float(r.p50) for r in rows],
        "p99": [float(r.p99) for r in rows],
    }


def calibration(session: Session) -> dict[str, Any]:
    """Predicted P(correct) at decision time against the feedback score: ten bins, and per model (the most
    feedback first). The model_quality report splits the same by dimension; one row per (feedback, dimension)
    there would count a feedback several times here. PostgreSQL makes both in one pass (grouping sets)."""
    postgres = _dialect(session) == "postgresql"
    bucket = (
        "LEAST(FLOOR(d.estimated_p_correct * 10), 9)"
        if postgres
        else "MIN(CAST(d.estimated_p_correct * 10 AS INTEGER), 9)"
    )
    joined = """FROM feedback f JOIN routing_decisions d ON d.id = f.decision_id
                WHERE d.estimated_p_correct IS NOT NULL"""
    measures = "COUNT(*) AS n, AVG(d.estimated_p_correct) AS predicted, AVG(f.score) AS observed"
    if postgres:
        rows = session.execute(
            text(
                f"""SELECT GROUPING(f.model) AS by_bin, f.model AS model, {bucket} AS bin, {measures} {joined}
                    GROUP BY GROUPING SETS ((f.model), ({bucket}))"""
            )
        ).all()
        bins = [r for r in rows if r.by_bin]
        models = [r for r in rows if not r.by_bin]
    else:
        bins = list(session.execute(text(f"SELECT {bucket} AS bin, {measures} {joined} GROUP BY {bucket}")))
        models = list(session.execute(text(f"SELECT f.model AS model, {measures} {joined} GROUP BY f.model")))
    return {
        "bins": [
            {"bin": int(r.bin), "n": int(r.n), "predicted": float(r.predicted), "observed": float(r.observed)}
            for r in sorted(bins, key=lambda r: r.bin)
        ],
        "models": [
            {"model": r.model, "feedback": int(r.n), "predicted": r.predicted, "observed": r.observed}
            for r in sorted(models, key=lambda r: (-r.n, r.model))[:CALIBRATION_MODELS]
        ],
    }
