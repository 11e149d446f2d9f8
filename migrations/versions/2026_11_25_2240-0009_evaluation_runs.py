"""evaluation runs stored by `capprof evaluate --store` (the console's Quality page), and a model's recent decisions

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "evaluation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("benchmark", sa.String(length=100), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("options", JSON, nullable=False),
        sa.Column("report", JSON, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_evaluation_runs_benchmark_created_at", "evaluation_runs", ["benchmark", "created_at"])
    op.create_index("ix_routing_decisions_chosen_model_created_at", "routing_decisions", ["chosen_model", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_routing_decisions_chosen_model_created_at", table_name="routing_decisions")
    op.drop_index("ix_evaluation_runs_benchmark_created_at", table_name="evaluation_runs")
    op.drop_table("evaluation_runs")
