"""API key limits, decision details for feedback and reports, feedback, and the admin report views

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 19:00:00.000000

The report views are documented column by column in README.md ("Reporting"). Times are bucketed in UTC.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPORT_VIEWS = ("routing_volume", "cost_savings", "traffic_mix", "model_quality", "profile_matrix", "latency")


def _buckets(column: str) -> tuple[str, str]:
    """(hour, day) bucket expressions in UTC for this dialect."""
    if op.get_bind().dialect.name == "postgresql":
        return (
            f"date_trunc('hour', {column} AT TIME ZONE 'UTC')",
            f"CAST({column} AT TIME ZONE 'UTC' AS date)",
        )
    return f"strftime('%Y-%m-%d %H:00:00', {column})", f"date({column})"


def _views() -> dict[str, str]:
    hour, day = _buckets("d.created_at")
    postgres = op.get_bind().dialect.name == "postgresql"
    # The actual cost: what the gateway measured from the upstream's usage, else what feedback reported.
    actual_cost = "COALESCE(d.actual_cost_usd, f.cost_usd)"
    routed_cost = "COALESCE(actual_cost_usd, estimated_cost_usd)"
    if postgres:
        percentiles = ", ".join(
            f"percentile_cont({q}) WITHIN GROUP (ORDER BY d.latency_ms) AS p{int(q * 100)}_ms"
            for q in (0.5, 0.95, 0.99)
        )
    else:  # SQLite has no percentile function: the report code fills these columns in Python
        percentiles = ", ".join(f"CAST(NULL AS REAL) AS p{p}_ms" for p in (50, 95, 99))
    return {
        "routing_volume": f"""
            SELECT {hour} AS hour, {day} AS day, d.caller AS caller, d.chosen_model AS model,
                   COUNT(*) AS decisions,
                   SUM(d.estimated_cost_usd) AS estimated_cost_usd,
                   AVG(d.latency_ms) AS mean_latency_ms
            FROM routing_decisions d
            GROUP BY {hour}, {day}, d.caller, d.chosen_model""",
        "cost_savings": f"""
            WITH routed AS (
                SELECT {day} AS day, d.caller AS caller, COALESCE(d.served_model, d.chosen_model) AS model,
                       d.estimated_cost_usd AS estimated_cost_usd,
                       {actual_cost} AS actual_cost_usd,
                       d.baseline_max_cost_usd AS baseline_max_cost_usd,
                       d.baseline_best_cost_usd AS baseline_best_cost_usd
                FROM routing_decisions d LEFT JOIN feedback f ON f.decision_id = d.id
            )
            SELECT day, caller, model,
                   COUNT(*) AS decisions,
                   SUM(estimated_cost_usd) AS estimated_cost_usd,
                   COUNT(actual_cost_usd) AS decisions_with_actual_cost,
                   SUM(actual_cost_usd) AS actual_cost_usd,
                   SUM({routed_cost}) AS routed_cost_usd,
                   SUM(baseline_max_cost_usd) AS most_expensive_cost_usd,
                   SUM(baseline_best_cost_usd) AS best_model_cost_usd,
                   SUM(baseline_max_cost_usd) - SUM({routed_cost}) AS savings_vs_most_expensive_usd,
                   100.0 * (SUM(baseline_max_cost_usd) - SUM({routed_cost}))
                       / NULLIF(SUM(baseline_max_cost_usd), 0) AS savings_vs_most_expensive_pct,
                   SUM(baseline_best_cost_usd) - SUM({routed_cost}) AS savings_vs_best_model_usd,
                   100.0 * (SUM(baseline_best_cost_usd) - SUM({routed_cost}))
                       / NULLIF(SUM(baseline_best_cost_usd), 0) AS savings_vs_best_model_pct
            FROM routed
            GROUP BY day, caller, model""",
        "traffic_mix": f"""
            SELECT {day} AS day, d.caller AS caller, dim.kind AS kind, dim.name AS dimension,
                   COUNT(*) AS decisions,
                   SUM(x.weight) AS weight,
                   SUM(x.weight) / SUM(SUM(x.weight)) OVER (PARTITION BY {day}, d.caller, dim.kind) AS share
            FROM decision_dimensions x
            JOIN routing_decisions d ON d.id = x.decision_id
            JOIN dimensions dim ON dim.id = x.dimension_id
            GROUP BY {day}, d.caller, dim.kind, dim.name""",
        "model_quality": f"""
            SELECT {day} AS day, d.caller AS caller, f.model AS model, dim.kind AS kind, dim.name AS dimension,
                   COUNT(*) AS feedback,
                   SUM(q.weight) AS support,
                   SUM(q.weight * f.score) / SUM(q.weight) AS observed_accuracy,
                   SUM(q.weight * d.estimated_p_correct) / SUM(q.weight) AS predicted_p_correct,
                   (SUM(q.weight * f.score) - SUM(q.weight * d.estimated_p_correct)) / SUM(q.weight)
                       AS calibration_gap
            FROM feedback f
            JOIN routing_decisions d ON d.id = f.decision_id
            JOIN eval_query_dimensions q ON q.query_id = f.eval_query_id
            JOIN dimensions dim ON dim.id = q.dimension_id
            GROUP BY {day}, d.caller, f.model, dim.kind, dim.name""",
        "profile_matrix": """
            SELECT m.name AS model, dim.kind AS kind, dim.name AS dimension,
                   p.weighted_sum / NULLIF(p.support, 0) AS score,
                   p.support AS support, p.n AS records
            FROM profile_scores p
            JOIN models m ON m.id = p.model_id
            JOIN dimensions dim ON dim.id = p.dimension_id""",
        "latency": f"""
            SELECT {hour} AS hour, COUNT(*) AS decisions, AVG(d.latency_ms) AS mean_ms, {percentiles},
                   MAX(d.latency_ms) AS max_ms
            FROM routing_decisions d
            GROUP BY {hour}""",
    }


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("default_lambda", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("monthly_budget_usd", sa.Float(), nullable=True))

    with op.batch_alter_table("routing_decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("caller_label", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("baseline_max_cost_usd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("baseline_best_model", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("baseline_best_cost_usd", sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f("ix_routing_decisions_caller"), ["caller"], unique=False)
        batch_op.create_index("ix_routing_decisions_key_name_created_at", ["key_name", "created_at"], unique=False)

    op.create_table(
        "decision_queries",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("query_text", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    with op.batch_alter_table("decision_queries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_decision_queries_created_at"), ["created_at"], unique=False)

    op.create_table(
        "decision_dimensions",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("dimension_id", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dimension_id"], ["dimensions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("decision_id", "dimension_id"),
    )
    with op.batch_alter_table("decision_dimensions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_decision_dimensions_created_at"), ["created_at"], unique=False)

    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("caller", sa.String(length=200), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("eval_query_id", sa.Integer(), nullable=True),
        sa.Column("query_vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["decision_id"], ["routing_decisions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["eval_query_id"], ["eval_queries.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("decision_id"),
    )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feedback_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_feedback_model"), ["model"], unique=False)

    for name, body in _views().items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in reversed(REPORT_VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")

    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedback_model"))
        batch_op.drop_index(batch_op.f("ix_feedback_created_at"))
    op.drop_table("feedback")
    with op.batch_alter_table("decision_dimensions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decision_dimensions_created_at"))
    op.drop_table("decision_dimensions")
    with op.batch_alter_table("decision_queries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decision_queries_created_at"))
    op.drop_table("decision_queries")

    with op.batch_alter_table("routing_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_routing_decisions_key_name_created_at")
        batch_op.drop_index(batch_op.f("ix_routing_decisions_caller"))
        batch_op.drop_column("baseline_best_cost_usd")
        batch_op.drop_column("baseline_best_model")
        batch_op.drop_column("baseline_max_cost_usd")
        batch_op.drop_column("caller_label")
        batch_op.drop_column("key_name")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("monthly_budget_usd")
        batch_op.drop_column("default_lambda")
