"""operating points (the calibrated presets), the calibration of P(correct), and catch-all domains

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operating_points",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("cost_weight", sa.Float(), nullable=False),
        sa.Column("validation_accuracy", sa.Float(), nullable=False),
        sa.Column("validation_cost_per_query", sa.Float(), nullable=False),
        sa.Column("validation_queries", sa.Integer(), nullable=False),
        sa.Column("calibrated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "curve", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "probability_calibrations",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("scale", sa.Float(), nullable=False),
        sa.Column("bias", sa.Float(), nullable=False),
        sa.Column("validation_pairs", sa.Integer(), nullable=False),
        sa.Column("ece_before", sa.Float(), nullable=False),
        sa.Column("ece_after", sa.Float(), nullable=False),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("dimensions") as batch:
        batch.add_column(sa.Column("catch_all", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("dimensions") as batch:
        batch.drop_column("catch_all")
    op.drop_table("probability_calibrations")
    op.drop_table("operating_points")
