"""What each console page shows, read in SQL: aggregates and pages are computed by the database, never by loading
all models or decisions into Python (the pages must stay fast with 10,000 models and a million decisions).

Sort keys come from whitelists (`MODEL_SORTS`); column names never come from a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
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


def model_detail(session: Session, name: str) -> dict[str, Any] | None:
    """A model's row, its profile (every capability, its best-supported domains), recent decisions and feedback."""
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
            """SELECT d.kind, d.name, p.weighted_sum / NULLIF(p.support, 0) AS score, p.support, p.n
               FROM profile_scores p JOIN dimensions d ON d.id = p.dimension_id
               WHERE p.model_id = :id AND p.support > 0
               ORDER BY d.kind, p.support DESC"""
        ),
        {"id": model.id},
    ).all()
    capabilities = sorted((dict(r._mapping) for r in profile if r.kind == "capability"), key=lambda r: str(r["name"]))
    domains = [dict(r._mapping) for r in profile if r.kind == "domain"][:HEATMAP_DOMAINS]
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
    cells: dict[tuple[str, int], tuple[float | None, float, int]]  # (model, dimension id) -> (score, support, n)
    page: Page


def heatmap_dimensions(session: Session, domains: int = HEATMAP_DOMAINS) -> list[dict[str, Any]]:
    """Every capability, then the most-used domains: by routed traffic, topped up by evaluation support."""
    capabilities = session.execute(
        text("SELECT id, kind, name FROM dimensions WHERE kind = 'capability' ORDER BY name")
    ).all()
    used = session.execute(
        text(
            """SELECT d.id, d.kind, d.name FROM decision_dimensions x JOIN dimensions d ON d.id = x.dimension_id
               WHERE d.kind = 'domain' AND NOT d.catch_all
               GROUP BY d.id, d.kind, d.name ORDER BY SUM(x.weight) DESC, d.name LIMIT :n"""
        ),
        {"n": domains},
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


def heatmap(session: Session, page: int, per_page: int) -> Heatmap:
    dimensions = heatmap_dimensions(session)
    models = session.execute(
        text("SELECT id, name FROM models ORDER BY name LIMIT :limit OFFSET :offset"),
        {"limit": per_page, "offset": (page - 1) * per_page},
    ).all()
    total = int(session.scalar(text("SELECT COUNT(*) FROM models")) or 0)
    cells: dict[tuple[str, int], tuple[float | None, float, int]] = {}
    if models and dimensions:
        query = text(
            """SELECT m.name, p.dimension_id, p.weighted_sum / NULLIF(p.support, 0) AS score, p.support, p.n
               FROM profile_scores p JOIN models m ON m.id = p.model_id
               WHERE p.model_id IN :models AND p.dimension_id IN :dims"""
        ).bindparams(bindparam("models", expanding=True), bindparam("dims", expanding=True))
        for row in session.execute(query, {"models": [m.id for m in models], "dims": [d["id"] for d in dimensions]}):
            cells[(row.name, row.dimension_id)] = (row.score, float(row.support or 0), int(row.n or 0))
    return Heatmap(dimensions, [m.name for m in models], cells, Page([], total, page, per_page))


def _day_param(session: Session, day: date) -> object:
    return day if _dialect(session) == "postgresql" else day.isoformat()


def _days(start: date, end: date) -> list[str]:
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _day_text(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)[:10]


def traffic(session: Session, start: date, end: date) -> dict[str, Any]:
    """The Traffic page's series over [start, end] (whole UTC days), each read from an admin report view."""
    params = {"start": _day_param(session, start), "end": _day_param(session, end)}
    in_range = "day >= :start AND day <= :end"
    days = _days(start, end)
    top = [
        r.model
        for r in session.execute(
            text(
                f"""SELECT model, SUM(decisions) AS n FROM routing_volume WHERE {in_range} AND model IS NOT NULL
                    GROUP BY model ORDER BY n DESC, model LIMIT {VOLUME_TOP_MODELS}"""
            ),
            params,
        )
    ]
    series: dict[str, dict[str, float]] = {m: {} for m in top}
    other: dict[str, float] = {}
    per_day = session.execute(
        text(
            f"""SELECT day, model, SUM(decisions) AS n FROM (
                    SELECT day, CASE WHEN model IN :top THEN model ELSE NULL END AS model, decisions
                    FROM routing_volume WHERE {in_range}) v
                GROUP BY day, model"""
        ).bindparams(bindparam("top", expanding=True)),
        params | {"top": top or [""]},
    )
    for row in per_day:
        target = series[row.model] if row.model is not None else other
        target[_day_text(row.day)] = float(row.n)
    volume = [{"label": m, "data": [series[m].get(d, 0.0) for d in days]} for m in top]
    if any(other.values()):
        volume.append({"label": "other models", "data": [other.get(d, 0.0) for d in days]})

    savings_rows = {
        _day_text(r.day): r
        for r in session.execute(
            text(
                f"""SELECT day, SUM(decisions) AS decisions, SUM(routed_cost_usd) AS routed,
                           SUM(best_model_cost_usd) AS best, SUM(most_expensive_cost_usd) AS most_expensive
                    FROM cost_savings WHERE {in_range} GROUP BY day"""
            ),
            params,
        )
    }

    def column(name: str) -> list[float | None]:
        return [
            float(getattr(savings_rows[d], name))
            if d in savings_rows and getattr(savings_rows[d], name) is not None
            else None
            for d in days
        ]

    routed, best = column("routed"), column("best")
    totals = {
        "routed": sum(x for x in routed if x is not None),
        "best": sum(x for x in best if x is not None),
        "decisions": int(sum(float(r.decisions) for r in savings_rows.values())),
    }
    totals["saved"] = totals["best"] - totals["routed"]

    mix: dict[str, list[dict[str, Any]]] = {}
    for kind in ("capability", "domain"):
        mix[kind] = [
            {"dimension": r.dimension, "weight": float(r.weight)}
            for r in session.execute(
                text(
                    f"""SELECT dimension, SUM(weight) AS weight FROM traffic_mix WHERE {in_range} AND kind = :kind
                        GROUP BY dimension ORDER BY weight DESC, dimension LIMIT {MIX_TOP}"""
                ),
                params | {"kind": kind},
            )
        ]

    _, latency_rows = run_report(
        session,
        "latency",
        ReportFilters(start=datetime.combine(start, time.min), end=datetime.combine(end + timedelta(days=1), time.min)),
    )
    return {
        "days": days,
        "volume": volume,
        "savings": {
            "routed": routed,
            "best": best,
            "most_expensive": column("most_expensive"),
        },
        "totals": totals,
        "mix": mix,
        "latency": {
            "hours": [r["hour"] for r in latency_rows],
            "p50": [r["p50_ms"] for r in latency_rows],
            "p99": [r["p99_ms"] for r in latency_rows],
        },
    }


def calibration(session: Session) -> dict[str, Any]:
    """Predicted P(correct) at decision time against the feedback score: ten bins, and per model (the most
    feedback first). The model_quality report splits the same by dimension; one row per (feedback, dimension)
    there would count a feedback several times here."""
    postgres = _dialect(session) == "postgresql"
    bucket = (
        "LEAST(FLOOR(d.estimated_p_correct * 10), 9)"
        if postgres
        else "MIN(CAST(d.estimated_p_correct * 10 AS INTEGER), 9)"
    )
    bins = session.execute(
        text(
            f"""SELECT {bucket} AS bin, COUNT(*) AS n, AVG(d.estimated_p_correct) AS predicted,
                       AVG(f.score) AS observed
                FROM feedback f JOIN routing_decisions d ON d.id = f.decision_id
                WHERE d.estimated_p_correct IS NOT NULL
                GROUP BY {bucket} ORDER BY bin"""
        )
    ).all()
    models = session.execute(
        text(
            """SELECT f.model AS model, COUNT(*) AS feedback, AVG(d.estimated_p_correct) AS predicted,
                      AVG(f.score) AS observed
               FROM feedback f JOIN routing_decisions d ON d.id = f.decision_id
               GROUP BY f.model ORDER BY COUNT(*) DESC, f.model LIMIT 20"""
        )
    ).all()
    return {
        "bins": [
            {"bin": int(r.bin), "n": int(r.n), "predicted": float(r.predicted), "observed": float(r.observed)}
            for r in bins
        ],
        "models": [dict(r._mapping) for r in models],
    }
