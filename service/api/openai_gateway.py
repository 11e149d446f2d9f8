"""POST /openai/v1/chat/completions and GET /openai/v1/models: an OpenAI-compatible gateway.

`model: "auto"` routes the messages like /v1/route (only models with an upstream are candidates) and forwards to
the chosen model's upstream, falling back to the next ranked alternative when an upstream fails before its first
byte; a registered model's name forwards to it directly. Streams pass through as they arrive. The decision row
records which model served, after how many fallbacks, and the actual cost from the upstream's `usage`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from profiling.decision import Decision
from service.api.auth import Caller, RequireRoute, RouteKeyDep
from service.api.budget import enforce_budget
from service.api.deps import BatcherDep, DecisionLogDep, MetricsDep, RuntimeDep, UpstreamsDep
from service.api.responses import errors
from service.api.routing import _decide, _log, _texts
from service.api.schemas import TEXT_PATTERN, TEXT_SCHEMA_PATTERN, Message, RouteRequest, pattern_problem
from service.gateway.upstream import AllUpstreamsFailed, Failure, Opened, SseRelay, Usage
from service.metrics import Metrics
from service.routing.decision_log import DecisionLog
from service.routing.state import UpstreamTarget
from service.runtime import Runtime

# An application's capprof key (route scope) is its OpenAI api_key; it is never forwarded upstream.
router = APIRouter(
    prefix="/openai/v1", tags=["openai gateway"], dependencies=[RequireRoute], responses=errors(401, 403, 422)
)

logger = logging.getLogger(__name__)
AUTO = "auto"
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
ROUTED_TURNS = 200  # /v1/route's limit on messages; earlier turns beyond it do not change the choice much
ROUTED_CHARS = 200_000


class GatewayOptions(BaseModel):
    """Routing knobs for `model: "auto"`, sent in the body's extra field `capprof`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    cost_weight: float | None = Field(
        default=None, ge=0, le=1000, alias="lambda", description="default: the key's lambda, else the balanced preset"
    )
    preset: Literal["quality", "balanced", "economy"] | None = None
    candidates: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    max_cost: float | None = Field(default=None, gt=0, description="USD per query, estimated")
    exclude_providers: list[str] = Field(default_factory=list)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1, max_length=50)
    # the pattern is published, and enforced by `_text_problem` with a message naming the character
    content: Annotated[str, Field(json_schema_extra={"pattern": TEXT_SCHEMA_PATTERN})] | list[dict[str, Any]] | None = (
        None
    )


class ChatCompletionIn(BaseModel):
    """OpenAI's chat completion body; fields capprof does not read are forwarded untouched."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200, description='"auto" to route, or a registered model name')
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    stream: bool | None = None
    capprof: GatewayOptions | None = None


def _error(
    status_code: int, message: str, param: str | None = None, kind: str = "invalid_request_error", **headers: str
) -> JSONResponse:
    """Both shapes at once: capprof's `detail` (+ `errors`) and OpenAI's `error`, so either client reads it."""
    body: dict[str, Any] = {"detail": message, "error": {"message": message, "type": kind, "param": param}}
    if param is not None:
        body["errors"] = [{"field": param, "problem": message}]
    return JSONResponse(body, status_code=status_code, headers=headers or None)


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, str):
        return content
    parts = [p.get("text") for p in content or [] if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(p for p in parts if isinstance(p, str))


def _route_request(body: ChatCompletionIn, upstream_names: list[str]) -> RouteRequest:
    """The chat as a /v1/route request whose candidates are the models with an upstream."""
    options = body.capprof or GatewayOptions()
    messages = [
        Message(role=ROLES.get(m.role, "user"), content=_text(m.content)[:ROUTED_CHARS])  # type: ignore[arg-type]
        for m in body.messages[-ROUTED_TURNS:]
    ]
    allowed = [n for n in upstream_names if options.candidates is None or n in options.candidates]
    try:
        return RouteRequest(  # type: ignore[call-arg]  # "lambda" is the alias of cost_weight
            messages=messages,
            cost_weight=options.cost_weight,
            preset=options.preset,
            candidates=allowed or None,
            max_cost=options.max_cost,
            exclude_providers=options.exclude_providers,
            top_n=1,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error["loc"]
        field = "messages" if loc and loc[0] == "messages" else (f"capprof.{loc[0]}" if loc else "capprof")
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{field}: {error['msg']}") from exc


def _text_problem(texts: list[str]) -> JSONResponse | None:
    """422 for a message no database could store (a control character, a lone surrogate), before any upstream is
    called: the decision row keeps a hash of the text."""
    for i, text in enumerate(texts):
        problem = pattern_problem(text, TEXT_PATTERN)
        if problem:
            return _error(422, f"messages[{i}].content: {problem}", param=f"messages[{i}].content")
    return None


def _non_finite_field(value: Any, path: str = "") -> str | None:
    """The first number that is NaN or infinite in a forwarded field, by its path: JSON has none, so forwarding
    it would send the upstream a body it cannot parse (Python's json reads and writes them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found = _non_finite_field(child, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]")
        if found is not None:
            return found
    return None


def _forwarded_problem(body: ChatCompletionIn) -> JSONResponse | None:
    """422 for a forwarded field holding NaN or Infinity, before any upstream is called."""
    fields = {**(body.model_extra or {}), "messages": [m.model_extra or {} for m in body.messages]}
    path = _non_finite_field(fields)
    if path is None:
        return None
    name = path.lstrip(".")
    return _error(422, f"{name}: must be a finite number (JSON has no NaN or Infinity)", param=name)


def _direct_row(decision_id: str, model: str, texts: list[str], caller: Caller) -> dict[str, Any]:
    """A decision row for a request that named its model: nothing was routed, but the accounting is the same."""
    return {
        "id": decision_id,
        "created_at": datetime.now(UTC),
        "query_hash": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
        "chosen_model": model,
        "cost_weight": 0.0,
        "estimated_cost_usd": None,
        "estimated_p_correct": None,
        "candidates": [{"model": model}],
        "profile": {},
        "latency_ms": 0.0,
        "caller": caller.name,
        "key_name": caller.name,
        "caller_label": caller.label,
    }


class _Accounting:
    """Writes the decision once the answer is complete (at the end of a stream), with what served it."""

    def __init__(
        self,
        runtime: Runtime,
        log: DecisionLog,
        metrics: Metrics,
        caller: Caller,
        texts: list[str],
        routed: tuple[RouteRequest, Decision, np.ndarray, float] | None,
        direct_model: str | None,
    ) -> None:
        self.runtime, self.log, self.metrics, self.caller, self.texts = runtime, log, metrics, caller, texts
        self.routed, self.direct_model = routed, direct_model
        self.decision_id = routed[1].decision_id if routed else str(uuid.uuid4())

    def write(self, served: UpstreamTarget | None, fallbacks: int, usage: Usage | None) -> None:
        extra = {
            "served_model": served.model if served else None,
            "fallbacks": fallbacks,
            "actual_cost_usd": usage.cost_usd(served) if usage is not None and served is not None else None,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
        }
        if self.routed is not None:
            body, decision, vector, latency_ms = self.routed
            _log(self.runtime, self.log, self.metrics, body, decision, vector, latency_ms, self.caller, extra)
        else:
            assert self.direct_model is not None
            self.log.append(_direct_row(self.decision_id, self.direct_model, self.texts, self.caller) | extra)
            self.metrics.decisions_pending.set(self.log.pending)


def _count_failures(metrics: Metrics, failures: list[Failure]) -> None:
    for failure in failures:
        logger.warning("gateway: upstream of %s failed before its first byte: %s", failure.model, failure.reason)
        metrics.gateway_fallbacks.labels(failure.model, failure.reason.split(" (")[0]).inc()


def _headers(decision_id: str, opened: Opened) -> dict[str, str]:
    return {
        "x-capprof-model": opened.target.model,
        "x-capprof-decision-id": decision_id,
        "x-capprof-fallbacks": str(len(opened.failures)),
    }


@router.post("/chat/completions", response_model=None, responses=errors(404, 429, 502, 503))
async def chat_completions(
    body: ChatCompletionIn,
    runtime: RuntimeDep,
    batcher: BatcherDep,
    log: DecisionLogDep,
    metrics: MetricsDep,
    upstreams: UpstreamsDep,
    caller: RouteKeyDep,
) -> Response:
    """Route (model "auto") or take the named model, forward to its upstream, pass the answer back."""
    if not runtime.router.loaded:
        return _error(503, "routing state not loaded: import data or register models first", kind="server_error")
    targets_by_name = runtime.router.state.upstreams
    texts = [_text(m.content) for m in body.messages]
    if (refused := _text_problem(texts) or _forwarded_problem(body)) is not None:
        return refused
    routed: tuple[RouteRequest, Decision, np.ndarray, float] | None = None
    if body.model == AUTO:
        if body.capprof is not None and body.capprof.candidates is not None:
            unknown = sorted(set(body.capprof.candidates) - set(runtime.router.state.models.names))
            if unknown:
                return _error(422, f"not registered or not active: {unknown[:10]}", param="capprof.candidates")
        if not targets_by_name:
            return _error(503, "no registered model has an upstream (set endpoint_url on a model)", kind="server_error")
        started = time.perf_counter()
        route_body = _route_request(body, list(targets_by_name))
        if route_body.candidates is None:
            return _error(422, "none of these models has an upstream", param="capprof.candidates")
        route_body.top_n = 1 + runtime.settings.gateway_max_fallbacks
        await asyncio.to_thread(enforce_budget, runtime, log, metrics, caller)
        route_texts, _ = _texts(route_body)
        vectors = await batcher.embed(route_texts)
        decisions, query_vectors = _decide(runtime, [route_body], vectors, caller)
        decision = decisions[0]
        routed = (route_body, decision, query_vectors[0], (time.perf_counter() - started) * 1000)
        targets = [targets_by_name[a.model] for a in decision.alternatives]
    elif body.model in targets_by_name:
        await asyncio.to_thread(enforce_budget, runtime, log, metrics, caller)
        targets = [targets_by_name[body.model]]
    else:
        return _error(
            404,
            f'model {body.model!r} is not a registered, active model with an upstream (or use "auto")',
            param="model",
        )

    accounting = _Accounting(runtime, log, metrics, caller, texts, routed, None if routed else body.model)
    forward = body.model_dump(exclude={"capprof"}, exclude_unset=True)
    stream = bool(body.stream)
    wants_usage = False
    if stream:
        stream_options = forward.get("stream_options") or {}
        wants_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        forward["stream_options"] = {
            **(stream_options if isinstance(stream_options, dict) else {}),
            "include_usage": True,
        }

    try:
        opened = await upstreams.open(targets, forward, stream)
    except AllUpstreamsFailed as exc:
        _count_failures(metrics, exc.failures)
        accounting.write(None, len(exc.failures), None)
        metrics.route_requests.labels("gateway", "upstream_failed").inc()
        return _error(
            502,
            f"no upstream answered: {exc}",
            kind="upstream_error",
            **{"x-capprof-decision-id": accounting.decision_id, "x-capprof-fallbacks": str(len(exc.failures))},
        )
    _count_failures(metrics, opened.failures)
    headers = _headers(accounting.decision_id, opened)
    if not stream or not opened.ok:
        accounting.write(opened.target, len(opened.failures), opened.usage if opened.ok else None)
        metrics.route_requests.labels("gateway", "ok" if opened.ok else "upstream_4xx").inc()
        return Response(
            opened.body,
            status_code=opened.response.status_code,
            media_type=opened.response.headers.get("content-type", "application/json"),
            headers=headers,
        )

    relay = SseRelay(opened, wants_usage)

    async def events() -> AsyncIterator[bytes]:
        try:
            async with aclosing(relay.stream()) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            accounting.write(opened.target, len(opened.failures), relay.usage if relay.error is None else None)
            metrics.route_requests.labels("gateway", "ok" if relay.error is None else "stream_broke").inc()

    return StreamingResponse(events(), media_type="text/event-stream", headers=headers | {"cache-control": "no-cache"})


@router.get("/models")
def list_models(runtime: RuntimeDep) -> dict[str, Any]:
    """ "auto" and every active model with an upstream, in OpenAI's list shape."""
    names = list(runtime.router.state.upstreams) if runtime.router.loaded else []
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "capprof"} for name in [AUTO, *names]],
    }
