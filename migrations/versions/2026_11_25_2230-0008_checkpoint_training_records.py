"""checkpoint training records: per model, the records Model-SAT was trained on beyond the aptitude items

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # NULL for checkpoints trained before: the scorer's share then follows the aptitude distance alone
    with op.batch_alter_table("reranker_checkpoints") as batch:
        batch.add_column(sa.Column("training_records", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reranker_checkpoints") as batch:
        batch.drop_column("training_records")
