"""SQLAlchemy 2 models: the relational truth (DESIGN.md, "Stores")."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false

JsonType = JSON().with_variant(JSONB(), "postgresql")

DIMENSION_KINDS = ("capability", "domain")
RECORD_SOURCES = ("import", "aptitude", "feedback", "api")
MODEL_STATUSES = ("active", "disabled")


class Base(DeclarativeBase):
    pass


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LlmModel(TimestampMixin, Base):
    """A routable LLM with its prices; derived cost statistics are refreshed with its profile."""

    __tablename__ = "models"
    __table_args__ = (CheckConstraint(f"status IN {MODEL_STATUSES}", name="ck_models_status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    provider: Mapped[str | None] = mapped_column(String(100))
    input_usd_per_mtok: Mapped[float | None] = mapped_column(Float)
    output_usd_per_mtok: Mapped[float | None] = mapped_column(Float)
    price_basis: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="active")
    typical_output_tokens: Mapped[float | None] = mapped_column(Float)
    mean_cost_usd: Mapped[float | None] = mapped_column(Float)
    # Gateway upstream (OpenAI-compatible): the key itself is never stored, only the env var that holds it.
    endpoint_url: Mapped[str | None] = mapped_column(String(500))
    upstream_model: Mapped[str | None] = mapped_column(String(200))
    api_key_env: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    records: Mapped[list["EvalRecord"]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True
    )


class Dimension(TimestampMixin, Base):
    """A capability or a knowledge domain that queries and models are profiled along."""

    __tablename__ = "dimensions"
    __table_args__ = (CheckConstraint(f"kind IN {DIMENSION_KINDS}", name="ck_dimensions_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(20), default="api")
    # A catch-all domain of everyday topics: a query nearest to it gets no domain instead of a wrong one.
    catch_all: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    exemplars: Mapped[list["Exemplar"]] = relationship(
        back_populates="dimension", cascade="all, delete-orphan", passive_deletes=True
    )


class Exemplar(Base):
    """A prompt that typifies a dimension; its vector lives in Qdrant under the same id."""

    __tablename__ = "exemplars"
    __table_args__ = (UniqueConstraint("dimension_id", "text_hash", name="uq_exemplars_dimension_text"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dimension_id: Mapped[int] = mapped_column(ForeignKey("dimensions.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))

    dimension: Mapped[Dimension] = relationship(back_populates="exemplars")


class EvalQuery(Base):
    """A query some models were evaluated on; its vector lives in Qdrant under the same id."""

    __tablename__ = "eval_queries"
    __table_args__ = (UniqueConstraint("benchmark", "external_id", name="uq_eval_queries_benchmark_external"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    benchmark: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str] = mapped_column(String(200))
    domain: Mapped[str | None] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64), index=True)
    answer: Mapped[str | None] = mapped_column(Text)  # gold answer where the source gives one; admins only


class EvalQueryDimension(Base):
    """The profile of an evaluation query: its weight on each ranked dimension."""

    __tablename__ = "eval_query_dimensions"

    query_id: Mapped[int] = mapped_column(ForeignKey("eval_queries.id", ondelete="CASCADE"), primary_key=True)
    dimension_id: Mapped[int] = mapped_column(
        ForeignKey("dimensions.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    weight: Mapped[float] = mapped_column(Float)


class EvalRecord(TimestampMixin, Base):
    """One outcome: how well a model answered one evaluation query, and what it cost."""

    __tablename__ = "eval_records"
    __table_args__ = (
        UniqueConstraint("model_id", "query_id", "source", name="uq_eval_records_model_query_source"),
        CheckConstraint(f"source IN {RECORD_SOURCES}", name="ck_eval_records_source"),
        Index("ix_eval_records_query", "query_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    query_id: Mapped[int] = mapped_column(ForeignKey("eval_queries.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(20), default="import")

    model: Mapped[LlmModel] = relationship(back_populates="records")


class ProfileScore(Base):
    """Running sums behind Score(model, dimension); the shrunk score is derived when read."""

    __tablename__ = "profile_scores"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    dimension_id: Mapped[int] = mapped_column(ForeignKey("dimensions.id", ondelete="CASCADE"), primary_key=True)
    weighted_sum: Mapped[float] = mapped_column(Float, default=0.0)
    support: Mapped[float] = mapped_column(Float, default=0.0)
    n: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class RoutingDecision(Base):
    """One answered route request, kept for usage, cost and quality reports."""

    __tablename__ = "routing_decisions"
    __table_args__ = (
        Index("ix_routing_decisions_key_name_created_at", "key_name", "created_at"),
        # the console's model page: a model's recent decisions without sorting all of them
        Index("ix_routing_decisions_chosen_model_created_at", "chosen_model", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    query_hash: Mapped[str] = mapped_column(String(64))
    chosen_model: Mapped[str | None] = mapped_column(String(200), index=True)
    cost_weight: Mapped[float] = mapped_column(Float)
    estimated_cost_usd: Mapped[float | None] = mapped_column(Float)
    estimated_p_correct: Mapped[float | None] = mapped_column(Float)
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    profile: Mapped[dict[str, Any]] = mapped_column(JsonType)
    latency_ms: Mapped[float] = mapped_column(Float)
    caller: Mapped[str | None] = mapped_column(String(200), index=True)
    # Issue 11: who routed (the API key's name; `caller` holds it too, or the X-Caller label when anonymous),
    # the self-declared label, and what the query would have cost on the two baselines of the savings report.
    key_name: Mapped[str | None] = mapped_column(String(200))
    caller_label: Mapped[str | None] = mapped_column(String(200))
    baseline_max_cost_usd: Mapped[float | None] = mapped_column(Float)
    baseline_best_model: Mapped[str | None] = mapped_column(String(200))
    baseline_best_cost_usd: Mapped[float | None] = mapped_column(Float)
    # Filled by the gateway: which model finally answered, after how many fallbacks, at what real cost.
    served_model: Mapped[str | None] = mapped_column(String(200))
    fallbacks: Mapped[int | None] = mapped_column(Integer)
    actual_cost_usd: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)


class ApiKey(TimestampMixin, Base):
    """A caller's key, stored only as an HMAC-SHA256 hash, with its scope (route < read < admin) and limits."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    scopes: Mapped[str] = mapped_column(String(200), default="route")
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    default_lambda: Mapped[float | None] = mapped_column(Float)
    monthly_budget_usd: Mapped[float | None] = mapped_column(Float)


class AptitudeTest(TimestampMixin, Base):
    """A versioned aptitude test (Model-SAT): tasks of items chosen to separate models."""

    __tablename__ = "aptitude_tests"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    built_from: Mapped[dict[str, Any]] = mapped_column(JsonType)

    tasks: Mapped[list["AptitudeTask"]] = relationship(
        back_populates="test", cascade="all, delete-orphan", passive_deletes=True, order_by="AptitudeTask.position"
    )


class AptitudeTask(Base):
    __tablename__ = "aptitude_tasks"
    __table_args__ = (UniqueConstraint("test_id", "position", name="uq_aptitude_tasks_test_position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    test_id: Mapped[int] = mapped_column(ForeignKey("aptitude_tests.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    keywords: Mapped[list[str]] = mapped_column(JsonType)

    test: Mapped[AptitudeTest] = relationship(back_populates="tasks")
    items: Mapped[list["AptitudeItem"]] = relationship(
        back_populates="task", cascade="all, delete-orphan", passive_deletes=True, order_by="AptitudeItem.position"
    )


class AptitudeItem(Base):
    """One item of a task: an evaluation query (so its outcomes are ordinary evaluation records)."""

    __tablename__ = "aptitude_items"
    __table_args__ = (UniqueConstraint("task_id", "query_id", name="uq_aptitude_items_task_query"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("aptitude_tasks.id", ondelete="CASCADE"), index=True)
    query_id: Mapped[int] = mapped_column(ForeignKey("eval_queries.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)

    task: Mapped[AptitudeTask] = relationship(back_populates="items")


class AptitudeResult(Base):
    """A model's accuracy on one task: the entries of its aptitude vector."""

    __tablename__ = "aptitude_results"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("aptitude_tasks.id", ondelete="CASCADE"), primary_key=True)
    accuracy: Mapped[float] = mapped_column(Float)
    items: Mapped[int] = mapped_column(Integer)


class RerankerCheckpoint(TimestampMixin, Base):
    """A trained Model-SAT scorer: metadata here, weights in a file under the data dir."""

    __tablename__ = "reranker_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    path: Mapped[str] = mapped_column(String(500))
    aptitude_test_id: Mapped[int] = mapped_column(ForeignKey("aptitude_tests.id", ondelete="RESTRICT"))
    data_fingerprint: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JsonType)
    config: Mapped[dict[str, Any]] = mapped_column(JsonType)
    active: Mapped[bool] = mapped_column(default=False)
    # Scale-out: the weights themselves, so every replica loads the active checkpoint without a shared disk.
    weights: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    # Per model id: its training records beyond the aptitude items; the scorer's share in routing follows it (a
    # model it never saw gets none). NULL for checkpoints trained before this was kept.
    training_records: Mapped[dict[str, int] | None] = mapped_column(JsonType, nullable=True)


class OperatingPoint(Base):
    """A named lambda (quality, balanced, economy) calibrated on validation queries: the deployment's presets."""

    __tablename__ = "operating_points"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    cost_weight: Mapped[float] = mapped_column(Float)
    validation_accuracy: Mapped[float] = mapped_column(Float)
    validation_cost_per_query: Mapped[float] = mapped_column(Float)
    validation_queries: Mapped[int] = mapped_column(Integer)
    calibrated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    curve: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)


class ProbabilityCalibration(Base):
    """Platt scaling of the final P(correct), fitted on validation queries with the operating points."""

    __tablename__ = "probability_calibrations"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    scale: Mapped[float] = mapped_column(Float)
    bias: Mapped[float] = mapped_column(Float)
    validation_pairs: Mapped[int] = mapped_column(Integer)
    ece_before: Mapped[float] = mapped_column(Float)
    ece_after: Mapped[float] = mapped_column(Float)
    fitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# Issue 11: what feedback and the admin reports need, in queryable columns.


class DecisionQuery(Base):
    """A decision's query vector (and text, only when CAPPROF_STORE_QUERY_TEXT) for feedback; purged after retention."""

    __tablename__ = "decision_queries"

    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    query_text: Mapped[str | None] = mapped_column(Text)


class DecisionDimension(Base):
    """A decision's query profile as rows (dimension, weight); purged with the vector after retention."""

    __tablename__ = "decision_dimensions"

    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    dimension_id: Mapped[int] = mapped_column(ForeignKey("dimensions.id", ondelete="CASCADE"), primary_key=True)
    weight: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Feedback(Base):
    """The observed outcome of a routed decision; it also lives on as an evaluation record (source = feedback)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("routing_decisions.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String(200), index=True)
    caller: Mapped[str | None] = mapped_column(String(200))
    score: Mapped[float] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    eval_query_id: Mapped[int | None] = mapped_column(ForeignKey("eval_queries.id", ondelete="SET NULL"))
    # The evaluation query's vector: Qdrant is rebuilt from Postgres and the text may not be stored.
    query_vector: Mapped[bytes] = mapped_column(LargeBinary)


# Scale-out (issue 13): the routing-state generation every write bumps, and the change events behind it.


class RoutingGeneration(Base):
    """One row: the generation of the routing state; replicas refresh when it moves."""

    __tablename__ = "routing_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger)


class RoutingChange(Base):
    """What one generation changed (kind plus the model or dimension), so replicas refresh only that part."""

    __tablename__ = "routing_changes"

    generation: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(30))
    model_id: Mapped[int | None] = mapped_column(Integer)
    dimension_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# Import provenance (issue 10, item 8): re-running set-up must not undo what users changed through the API.
class ModelImportValues(Base):
    """The field values the last import wrote for a model; a current value that differs was changed since."""

    __tablename__ = "model_import_values"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    import_values: Mapped[dict[str, Any]] = mapped_column(JsonType)


class DataImport(TimestampMixin, Base):
    """A data folder imported once, by the fingerprint of its files (`capprof import --if-changed` skips it)."""

    __tablename__ = "data_imports"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(String(1000))
    families: Mapped[list[str]] = mapped_column(JsonType)


# Console (issue 14): evaluation reports kept for the Quality page.
class EvaluationRun(TimestampMixin, Base):
    """One `capprof evaluate --store` run: its report.json as written (cost-quality curves included)."""

    __tablename__ = "evaluation_runs"
    __table_args__ = (Index("ix_evaluation_runs_benchmark_created_at", "benchmark", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    benchmark: Mapped[str] = mapped_column(String(100))
    seed: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict[str, Any]] = mapped_column(JsonType)
    report: Mapped[dict[str, Any]] = mapped_column(JsonType)
