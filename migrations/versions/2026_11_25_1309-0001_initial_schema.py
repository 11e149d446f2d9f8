"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 13:09:37.087302
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=128), nullable=False),
        sa.Column("scopes", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "dimensions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('capability', 'domain')", name="ck_dimensions_kind"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "eval_queries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("benchmark", sa.String(length=100), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("domain", sa.String(length=200), nullable=True),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("benchmark", "external_id", name="uq_eval_queries_benchmark_external"),
    )
    with op.batch_alter_table("eval_queries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_eval_queries_text_hash"), ["text_hash"], unique=False)

    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=True),
        sa.Column("input_usd_per_mtok", sa.Float(), nullable=True),
        sa.Column("output_usd_per_mtok", sa.Float(), nullable=True),
        sa.Column("price_basis", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("typical_output_tokens", sa.Float(), nullable=True),
        sa.Column("mean_cost_usd", sa.Float(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint("status IN ('active', 'disabled')", name="ck_models_status"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "routing_decisions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("query_hash", sa.String(length=64), nullable=False),
        sa.Column("chosen_model", sa.String(length=200), nullable=True),
        sa.Column("cost_weight", sa.Float(), nullable=False),
        sa.Column("estimated_cost_usd", sa.Float(), nullable=True),
        sa.Column("estimated_p_correct", sa.Float(), nullable=True),
        sa.Column(
            "candidates",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "profile",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("caller", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("routing_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_routing_decisions_chosen_model"), ["chosen_model"], unique=False)
        batch_op.create_index(batch_op.f("ix_routing_decisions_created_at"), ["created_at"], unique=False)

    op.create_table(
        "eval_query_dimensions",
        sa.Column("query_id", sa.Integer(), nullable=False),
        sa.Column("dimension_id", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["dimension_id"], ["dimensions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["query_id"], ["eval_queries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("query_id", "dimension_id"),
    )
    with op.batch_alter_table("eval_query_dimensions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_eval_query_dimensions_dimension_id"), ["dimension_id"], unique=False)

    op.create_table(
        "eval_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("query_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint("source IN ('import', 'aptitude', 'feedback', 'api')", name="ck_eval_records_source"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["query_id"], ["eval_queries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "query_id", "source", name="uq_eval_records_model_query_source"),
    )
    with op.batch_alter_table("eval_records", schema=None) as batch_op:
        batch_op.create_index("ix_eval_records_query", ["query_id"], unique=False)

    op.create_table(
        "exemplars",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dimension_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["dimension_id"], ["dimensions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dimension_id", "text_hash", name="uq_exemplars_dimension_text"),
    )
    with op.batch_alter_table("exemplars", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exemplars_dimension_id"), ["dimension_id"], unique=False)

    op.create_table(
        "profile_scores",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("dimension_id", sa.Integer(), nullable=False),
        sa.Column("weighted_sum", sa.Float(), nullable=False),
        sa.Column("support", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["dimension_id"], ["dimensions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_id", "dimension_id"),
    )


def downgrade() -> None:
    op.drop_table("profile_scores")
    with op.batch_alter_table("exemplars", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exemplars_dimension_id"))

    op.drop_table("exemplars")
    with op.batch_alter_table("eval_records", schema=None) as batch_op:
        batch_op.drop_index("ix_eval_records_query")

    op.drop_table("eval_records")
    with op.batch_alter_table("eval_query_dimensions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_eval_query_dimensions_dimension_id"))

    op.drop_table("eval_query_dimensions")
    with op.batch_alter_table("routing_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_routing_decisions_created_at"))
        batch_op.drop_index(batch_op.f("ix_routing_decisions_chosen_model"))

    op.drop_table("routing_decisions")
    op.drop_table("models")
    with op.batch_alter_table("eval_queries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_eval_queries_text_hash"))

    op.drop_table("eval_queries")
    op.drop_table("dimensions")
    op.drop_table("api_keys")
