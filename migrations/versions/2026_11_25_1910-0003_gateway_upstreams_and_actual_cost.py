"""gateway upstreams on models, served model and actual cost on decisions, gold answers on queries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("endpoint_url", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("upstream_model", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("api_key_env", sa.String(length=200), nullable=True))
    with op.batch_alter_table("routing_decisions") as batch:
        batch.add_column(sa.Column("served_model", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("fallbacks", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("actual_cost_usd", sa.Float(), nullable=True))
        batch.add_column(sa.Column("prompt_tokens", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("completion_tokens", sa.Integer(), nullable=True))
    with op.batch_alter_table("eval_queries") as batch:
        batch.add_column(sa.Column("answer", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("eval_queries") as batch:
        batch.drop_column("answer")
    with op.batch_alter_table("routing_decisions") as batch:
        for column in ("completion_tokens", "prompt_tokens", "actual_cost_usd", "fallbacks", "served_model"):
            batch.drop_column(column)
    with op.batch_alter_table("models") as batch:
        for column in ("api_key_env", "upstream_model", "endpoint_url"):
            batch.drop_column(column)
