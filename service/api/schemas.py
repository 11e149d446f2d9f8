"""Request and response bodies of the HTTP API (kept apart from the ORM models)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from profiling.decision import Decision
from service.settings import OWN_SETTINGS_PREFIX, is_own_setting

# --- Edge validation (issue 10): what a store cannot hold, or holds only to fail later, never reaches it. ---
INT32_MAX = 2**31 - 1  # Integer columns (output_tokens, versions, ids)
MAX_QUERY_COST_USD = 1_000.0  # one query's cost; far above any real price, and keeps SQL AVG/SUM finite
# C0 controls, DEL and lone UTF-16 surrogates (JSON "\\ud800" decodes to one; no database can encode it).
_CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
_SURROGATES = r"\ud800-\udfff"
# White space spelled out: `\s` means different characters to Python's re and to ECMAScript (the JSON Schema
# dialect), so a schema-valid value could be refused (U+0085) or a refused one be schema-valid (U+FEFF).
_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


def _patterns(body: str) -> tuple[str, str]:
    """(pattern enforced on Python's re, pattern published in the JSON Schema) for one rule. The published one
    leaves out the surrogate range (Rust-based validators cannot compile it; JSON generators never make lone
    surrogates) and ends with `$`, ECMAScript's end of input; Python's `$` also matches before a final newline."""
    return "^" + body.replace("%S", _SURROGATES) + r"\Z", "^" + body.replace("%S", "") + "$"


LABEL_PATTERN, LABEL_SCHEMA_PATTERN = _patterns(rf"[^{_CONTROLS}\t\n\r%S]*")
TEXT_PATTERN, TEXT_SCHEMA_PATTERN = _patterns(rf"[^{_CONTROLS}%S]*")
# leading whitespace, then one visible character: linear on Python's re (no nested backtracking on long texts)
NONBLANK_TEXT_PATTERN, NONBLANK_TEXT_SCHEMA_PATTERN = _patterns(
    rf"[{_SPACE}]*[^{_SPACE}{_CONTROLS}%S][^{_CONTROLS}%S]*"
)
NAME_PATTERN, NAME_SCHEMA_PATTERN = _patterns(rf"[^{_SPACE}/{_CONTROLS}%S][^{_SPACE}{_CONTROLS}%S]*")
URL_PATTERN, URL_SCHEMA_PATTERN = _patterns(rf"https?://[^{_SPACE}{_CONTROLS}%S]+")
ENV_NAME_PATTERN, ENV_NAME_SCHEMA_PATTERN = _patterns(r"[A-Za-z_][A-Za-z0-9_]*")
_BAD_IN_LABEL = re.compile(rf"[{_CONTROLS}\t\n\r{_SURROGATES}]")
_BAD_IN_TEXT = re.compile(rf"[{_CONTROLS}{_SURROGATES}]")


def pattern_problem(value: object, pattern: str) -> str | None:
    """A readable problem for a value that failed one of the patterns above (the 422 handler uses it)."""
    if not isinstance(value, str) or pattern not in (LABEL_PATTERN, TEXT_PATTERN, NONBLANK_TEXT_PATTERN, NAME_PATTERN):
        return None
    found = (_BAD_IN_LABEL if pattern in (LABEL_PATTERN, NAME_PATTERN) else _BAD_IN_TEXT).search(value)
    if found is not None:
        code = ord(found.group())
        kind = "a lone surrogate" if code >= 0xD800 else "a control character"
        return f"contains {kind} (U+{code:04X}) at position {found.start()}"
    if pattern == NONBLANK_TEXT_PATTERN:
        return "is blank"
    if pattern == NAME_PATTERN:
        return "may not contain whitespace nor start with '/'"
    return None


def check_label(value: object) -> object:
    """For parameters outside the bodies (a path name): the same rule as Label, as a validator."""
    problem = pattern_problem(value, LABEL_PATTERN)
    if problem:
        raise ValueError(problem)
    return value


FIRST_REPORT_YEAR, LAST_REPORT_YEAR = 1970, 8999


Moment = TypeVar("Moment", date, datetime)


def clamp_report_moment(value: Moment | None) -> Moment | None:
    """Report and console ranges: dates near year 1 or 9999 overflowed on the way to UTC or to the next hour.
    No decision is that old or that far ahead, so a bound beyond these years is read as the years' edge."""
    if value is None or FIRST_REPORT_YEAR <= value.year <= LAST_REPORT_YEAR:
        return value
    year = FIRST_REPORT_YEAR if value.year < FIRST_REPORT_YEAR else LAST_REPORT_YEAR
    day = date(year, 1, 1) if year == FIRST_REPORT_YEAR else date(year, 12, 31)
    return datetime(day.year, day.month, day.day, tzinfo=UTC) if isinstance(value, datetime) else day


# The patterns run on Python's re engine (Strict's config): pydantic's default engine cannot express surrogates.
# names, ids, labels: no control character at all
Label = Annotated[str, Field(pattern=LABEL_PATTERN, json_schema_extra={"pattern": LABEL_SCHEMA_PATTERN})]
# queries, exemplars, descriptions: tab and newlines are fine
Text = Annotated[str, Field(pattern=TEXT_PATTERN, json_schema_extra={"pattern": TEXT_SCHEMA_PATTERN})]
# queries and exemplars: at least one visible character
NonBlankText = Annotated[
    str, Field(pattern=NONBLANK_TEXT_PATTERN, json_schema_extra={"pattern": NONBLANK_TEXT_SCHEMA_PATTERN})
]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("is blank")
    return value


ModelName = Annotated[
    str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN, json_schema_extra={"pattern": NAME_SCHEMA_PATTERN})
]
Price = Annotated[float, Field(ge=0, le=10_000, description="USD per million tokens")]
# Gateway upstreams: an OpenAI-compatible base URL and the NAME of the env var holding its key (never the key).
UpstreamUrl = Annotated[
    str,
    Field(min_length=8, max_length=500, pattern=URL_PATTERN, json_schema_extra={"pattern": URL_SCHEMA_PATTERN}),
]
UpstreamModel = Annotated[
    str, Field(min_length=1, max_length=200, pattern=LABEL_PATTERN, json_schema_extra={"pattern": LABEL_SCHEMA_PATTERN})
]


def _not_own_setting(value: str) -> str:
    """An upstream key may come from any env var but capprof's own settings: naming CAPPROF_ADMIN_KEY would send
    the admin key to whatever endpoint_url the caller set."""
    if is_own_setting(value):
        raise ValueError(f"may not name capprof's own settings ({OWN_SETTINGS_PREFIX}*)")
    return value


EnvName = Annotated[
    str,
    Field(
        max_length=200,
        pattern=ENV_NAME_PATTERN,
        json_schema_extra={"pattern": ENV_NAME_SCHEMA_PATTERN},
        description=f"env var NAME holding the key (not one of capprof's own, {OWN_SETTINGS_PREFIX}*)",
    ),
    AfterValidator(_not_own_setting),
]


def _whole(value: object) -> object:
    """JSON has one number type: 5.0 is the integer 5 (JSON Schema agrees); 5.5, "5" and true stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Integer columns are 32-bit: the bounds sit inside the annotation, before the float-to-int step.
Count = Annotated[int, Field(ge=0, le=INT32_MAX), BeforeValidator(_whole)]
RowId = Annotated[int, Field(ge=1, le=INT32_MAX), BeforeValidator(_whole)]


def _present_not_null(extra: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """JSON Schema of an optional field that may be left out but not sent as null (its validator refuses null)."""

    def rewrite(schema: dict[str, Any]) -> None:
        variants = [v for v in schema.pop("anyOf", []) if v.get("type") != "null"]
        if variants:
            schema.update(variants[0])
        schema.pop("default", None)
        schema.update(extra)

    return rewrite


def _as_utc(value: datetime) -> datetime:
    """SQLite hands back naive timestamps (its CURRENT_TIMESTAMP is UTC); RFC 3339 output needs the offset."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class Strict(BaseModel):
    """Request bodies: unknown fields, non-finite numbers and type coercion ("5" for 5) are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, regex_engine="python-re")


class EvaluationIn(Strict):
    """An outcome of the model on one query: name a stored query, or give a new query's text."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": ["query_id"]}, {"required": ["text"]}]})

    score: float = Field(ge=0, le=1, description="1 = correct, 0 = wrong; fractions allowed")
    benchmark: Label = Field(default="api", min_length=1, max_length=100)
    query_id: Label | None = Field(default=None, min_length=1, max_length=200, json_schema_extra=_present_not_null({}))
    text: Text | None = Field(default=None, min_length=1, max_length=100_000, json_schema_extra=_present_not_null({}))
    cost_usd: float | None = Field(default=None, ge=0, le=MAX_QUERY_COST_USD, description="USD for this query")
    output_tokens: Count | None = None

    @field_validator("query_id", "text", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may not be null (leave it out)")
        return value

    @model_validator(mode="after")
    def _needs_query(self) -> EvaluationIn:
        if self.query_id is None and self.text is None:
            raise ValueError("give query_id (a stored query) or text (a new query)")
        return self


class ModelCreate(Strict):
    name: ModelName
    provider: Label | None = Field(default=None, max_length=100)
    input_usd_per_mtok: Price | None = None
    output_usd_per_mtok: Price | None = None
    price_basis: Label | None = Field(default=None, max_length=100)
    status: Literal["active", "disabled"] = "active"
    evaluations: list[EvaluationIn] = Field(default_factory=list, max_length=100_000)
    endpoint_url: UpstreamUrl | None = None
    upstream_model: UpstreamModel | None = None
    api_key_env: EnvName | None = None


class ModelUpdate(Strict):
    provider: Label | None = Field(default=None, max_length=100)
    input_usd_per_mtok: Price | None = None
    output_usd_per_mtok: Price | None = None
    price_basis: Label | None = Field(default=None, max_length=100)
    # NOT NULL column: leave the field out to keep the status; an explicit null is refused (not in the schema)
    status: Literal["active", "disabled"] | SkipJsonSchema[None] = None
    endpoint_url: UpstreamUrl | None = None
    upstream_model: UpstreamModel | None = None
    api_key_env: EnvName | None = None

    @field_validator("status")
    @classmethod
    def _status_not_null(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("may not be null (leave it out to keep the current status)")
        return value


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
    created_at: UtcDatetime | None = None
    evaluations: int = 0
    endpoint_url: str | None = None
    upstream_model: str | None = None
    api_key_env: str | None = Field(default=None, description="the env var's name; the key is never returned")


class EvaluationsIn(Strict):
    evaluations: list[EvaluationIn] = Field(min_length=1, max_length=100_000)


class EvaluationsOut(BaseModel):
    model: str
    written: int


class DimensionCreate(Strict):
    kind: Literal["capability", "domain"] = "domain"
    name: Annotated[Label, AfterValidator(_not_blank)] = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=2000)
    # a blank exemplar was once dropped in silence, leaving a dimension with fewer exemplars than sent (or none)
    exemplars: list[Annotated[NonBlankText, Field(min_length=1, max_length=10_000)]] = Field(
        min_length=1, max_length=1000
    )


class DimensionOut(BaseModel):
    id: int
    kind: str
    name: str
    description: str
    source: str
    exemplars: int


class Message(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: Text = Field(max_length=200_000)


class RouteRequest(Strict):
    """Exactly one of `query` (one text) or `messages` (a chat); null is not a way to leave one out."""

    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=200_000,
        pattern=NONBLANK_TEXT_PATTERN,
        json_schema_extra=_present_not_null({"pattern": NONBLANK_TEXT_SCHEMA_PATTERN}),
    )
    messages: list[Message] | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="at least one message with non-blank content",
        json_schema_extra=_present_not_null(
            {"contains": {"properties": {"content": {"pattern": NONBLANK_TEXT_SCHEMA_PATTERN}}}}
        ),
    )
    cost_weight: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        alias="lambda",
        description="quality per USD per 1,000 queries you trade for cost; default: the key's lambda, else the "
        "`balanced` preset",
    )
    preset: Literal["quality", "balanced", "economy"] | None = Field(
        default=None,
        description="a calibrated operating point instead of a lambda: quality (best validation accuracy), balanced "
        "(cheapest within 1 point of it, the default) or economy (cheapest within 5 points)",
    )
    candidates: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    max_cost: float | None = Field(default=None, gt=0, description="USD per query, estimated")
    exclude_models: list[str] = Field(default_factory=list)
    exclude_providers: list[str] = Field(default_factory=list, description="providers left out (case does not matter)")
    top_n: Annotated[int, Field(ge=1, le=100), BeforeValidator(_whole)] = 3
    explain: bool = False

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        strict=True,
        regex_engine="python-re",
        populate_by_name=True,
        json_schema_extra={
            "oneOf": [{"required": ["query"]}, {"required": ["messages"]}],
            # lambda or preset, not both (either may be null, which is the same as leaving it out)
            "not": {
                "required": ["lambda", "preset"],
                "properties": {"lambda": {"type": "number"}, "preset": {"type": "string"}},
            },
        },
    )

    @model_validator(mode="after")
    def _one_input(self) -> RouteRequest:
        if (self.query is None) == (self.messages is None):
            raise ValueError("give exactly one of query or messages")
        if self.cost_weight is not None and self.preset is not None:
            raise ValueError("give lambda or preset, not both")
        if self.messages is not None and not any(m.content.strip() for m in self.messages):
            raise ValueError("messages: every message is empty")
        return self

    @field_validator("query", "messages", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may not be null (leave it out)")
        return value


class BatchRouteRequest(Strict):
    requests: list[RouteRequest] = Field(min_length=1)


class AlternativeOut(BaseModel):
    model: str
    score: float = Field(description="P(correct) - lambda * cost per 1,000 queries")
    p_correct: float
    estimated_cost_usd: float | None
    cost_imputed: bool = Field(
        default=False,
        description="true when the model has no prices and no observed cost: the estimate is the other models' median",
    )


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
    head: float = Field(
        default=0.0,
        description="the model's head (a per-model classifier on the query, trained with the re-ranker): its share "
        "times its P(correct); 0 without one",
    )
    reranker: float = Field(
        description="the Model-SAT scorer's correction (centred per query, so it can be negative); 0 if not re-scored"
    )
    cost: float
    calibration: float = Field(default=0.0, description="what the calibration of P(correct) added or took away")


class RouteResponse(BaseModel):
    decision_id: str
    model: str
    alternatives: list[AlternativeOut]
    profile: QueryProfileOut
    contributions: dict[str, ContributionOut] | None = None
    reranker_version: int | None = Field(default=None, description="the Model-SAT checkpoint that re-ranked, if any")
    cost_weight: float = Field(alias="lambda", description="the lambda the decision was made with")
    preset: str | None = Field(default=None, description="the operating point that gave lambda, if any")
    latency_ms: float
    truncated: list[str] = Field(
        default_factory=list, description="fields cut to CAPPROF_MAX_TEXT_CHARS before embedding (text_overflow)"
    )

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class OperatingPointOut(BaseModel):
    name: str
    cost_weight: float = Field(alias="lambda")
    validation_accuracy: float
    validation_cost_per_query: float
    validation_queries: int
    calibrated_at: UtcDatetime

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class BatchRouteResponse(BaseModel):
    decisions: list[RouteResponse]


def decision_response(decision: Decision, latency_ms: float) -> RouteResponse:
    def weights(items: tuple) -> list[DimensionWeight]:
        return [DimensionWeight(name=d.name, weight=d.weight, similarity_vote=d.vote) for d in items]

    return RouteResponse(
        decision_id=decision.decision_id,
        model=decision.model or "",
        alternatives=[
            AlternativeOut(
                model=a.model,
                score=a.utility,
                p_correct=a.p_correct,
                estimated_cost_usd=a.cost_usd,
                cost_imputed=a.cost_imputed,
            )
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
            m: ContributionOut(
                dimensions=c.dimensions,
                knn=c.knn,
                head=c.head,
                reranker=c.reranker,
                cost=c.cost,
                calibration=c.calibration,
            )
            for m, c in decision.contributions.items()
        },
        reranker_version=decision.reranker_version,
        preset=decision.preset,
        cost_weight=decision.cost_weight,  # type: ignore[call-arg]  # populate_by_name: "lambda" is the alias
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
    item_id: RowId
    score: float = Field(ge=0, le=1, description="1 = the model answered the item correctly")


class AptitudeAnswersIn(Strict):
    version: RowId | None = Field(default=None, description="the test version answered (default: the current one)")
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
    created_at: UtcDatetime | None = None
    active: bool
    data_fingerprint: str
    metrics: dict[str, float]


class ActivateIn(Strict):
    version: RowId
