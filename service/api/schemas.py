"""Request and response bodies of the HTTP API (kept apart from the ORM models)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from profiling.decision import Decision

ModelName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\s/][^\s]*$")]
Price = Annotated[float, Field(ge=0, le=10_000, description="USD per million tokens")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvaluationIn(Strict):
    """An outcome of the model on one query: name a stored query, or give a new query's text."""

    score: float = Field(ge=0, le=1, description="1 = correct, 0 = wrong; fractions allowed")
    benchmark: str = Field(default="api", min_length=1, max_length=100)
    query_id: str | None = Field(default=None, min_length=1, max_length=200)
    text: str | None = Field(default=None, min_length=1, max_length=100_000)
    cost_usd: float | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _needs_query(self) -> EvaluationIn:
        if self.query_id is None and self.text is None:
            raise ValueError("give query_id (a stored query) or text (a new query)")
        return self


class ModelCreate(Strict):
    name: ModelName
    provider: str | None = Field(default=None, max_length=100)
    input_usd_per_mtok: Price | None = None
    output_usd_per_mtok: Price | None = None
    price_basis: str | None = Field(default=None, max_length=100)
    status: Literal["active", "disabled"] = "active"
    evaluations: list[EvaluationIn] = Field(default_factory=list, max_length=100_000)


class ModelUpdate(Strict):
    provider: str | None = Field(default=None, max_length=100)
    input_usd_per_mtok: Price | None = None
    output_usd_per_mtok: Price | None = None
    price_basis: str | None = Field(default=None, max_length=100)
    status: Literal["active", "disabled"] | None = None


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    provider: str | None
    input_usd_per_mtok: float | None
    output_usd_per_mtok: float | None
    price_basis: str | None
    status: str
    typical_output_tokens: float | None
    mean_cost_usd: float | None
    created_at: datetime | None = None
    evaluations: int = 0


class EvaluationsIn(Strict):
    evaluations: list[EvaluationIn] = Field(min_length=1, max_length=100_000)


class EvaluationsOut(BaseModel):
    model: str
    written: int


class DimensionCreate(Strict):
    kind: Literal["capability", "domain"] = "domain"
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    exemplars: list[Annotated[str, Field(min_length=1, max_length=10_000)]] = Field(min_length=1, max_length=1000)


class DimensionOut(BaseModel):
    id: int
    kind: str
    name: str
    description: str
    source: str
    exemplars: int


class Message(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=200_000)


class RouteRequest(Strict):
    query: str | None = Field(default=None, min_length=1, max_length=200_000)
    messages: list[Message] | None = Field(default=None, min_length=1, max_length=200)
    cost_weight: float = Field(
        default=0.0, ge=0, le=1000, alias="lambda", description="quality per USD per 1,000 queries you trade for cost"
    )
    candidates: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    max_cost: float | None = Field(default=None, gt=0, description="USD per query, estimated")
    exclude_models: list[str] = Field(default_factory=list)
    exclude_providers: list[str] = Field(default_factory=list)
    top_n: int = Field(default=3, ge=1, le=100)
    explain: bool = False

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_input(self) -> RouteRequest:
        if (self.query is None) == (self.messages is None):
            raise ValueError("give exactly one of query or messages")
        if self.messages is not None and not any(m.content.strip() for m in self.messages):
            raise ValueError("messages: every message is empty")
        return self

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("query is blank")
        return value


class BatchRouteRequest(Strict):
    requests: list[RouteRequest] = Field(min_length=1)


class AlternativeOut(BaseModel):
    model: str
    score: float = Field(description="P(correct) - lambda * cost per 1,000 queries")
    p_correct: float
    estimated_cost_usd: float | None


class DimensionWeight(BaseModel):
    name: str
    weight: float
    similarity_vote: float


class QueryProfileOut(BaseModel):
    capabilities: list[DimensionWeight]
    domains: list[DimensionWeight]
    nearest_exemplar_similarity: float


class ContributionOut(BaseModel):
    dimensions: dict[str, float]
    knn: float
    reranker: float
    cost: float


class RouteResponse(BaseModel):
    decision_id: str
    model: str
    alternatives: list[AlternativeOut]
    profile: QueryProfileOut
    contributions: dict[str, ContributionOut] | None = None
    reranker_version: int | None = Field(default=None, description="the Model-SAT checkpoint that re-ranked, if any")
    latency_ms: float
    truncated: list[str] = Field(
        default_factory=list, description="fields cut to CAPPROF_MAX_TEXT_CHARS before embedding (text_overflow)"
    )


class BatchRouteResponse(BaseModel):
    decisions: list[RouteResponse]


def decision_response(decision: Decision, latency_ms: float) -> RouteResponse:
    def weights(items: tuple) -> list[DimensionWeight]:
        return [DimensionWeight(name=d.name, weight=d.weight, similarity_vote=d.vote) for d in items]

    return RouteResponse(
        decision_id=decision.decision_id,
        model=decision.model or "",
        alternatives=[
            AlternativeOut(model=a.model, score=a.utility, p_correct=a.p_correct, estimated_cost_usd=a.cost_usd)
            for a in decision.alternatives
        ],
        profile=QueryProfileOut(
            capabilities=weights(decision.profile.capabilities),
            domains=weights(decision.profile.domains),
            nearest_exemplar_similarity=decision.profile.nearest_similarity,
        ),
        contributions=None
        if decision.contributions is None
        else {
            m: ContributionOut(dimensions=c.dimensions, knn=c.knn, reranker=c.reranker, cost=c.cost)
            for m, c in decision.contributions.items()
        },
        reranker_version=decision.reranker_version,
        latency_ms=latency_ms,
    )


class AptitudeItemOut(BaseModel):
    id: int
    text: str


class AptitudeTaskOut(BaseModel):
    id: int
    description: str
    items: list[AptitudeItemOut]


class AptitudeTestOut(BaseModel):
    version: int
    tasks: list[AptitudeTaskOut]


class AptitudeAnswer(Strict):
    item_id: int
    score: float = Field(ge=0, le=1, description="1 = the model answered the item correctly")


class AptitudeAnswersIn(Strict):
    version: int | None = Field(default=None, description="the test version answered (default: the current one)")
    answers: list[AptitudeAnswer] = Field(min_length=1, max_length=10_000)


class AptitudeTaskScore(BaseModel):
    task_id: int
    description: str
    accuracy: float | None


class AptitudeResultOut(BaseModel):
    model: str
    version: int
    answered: int
    aptitude: list[AptitudeTaskScore]


class RerankerCheckpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    created_at: datetime | None = None
    active: bool
    data_fingerprint: str
    metrics: dict[str, float]


class ActivateIn(Strict):
    version: int = Field(ge=1)
