"""POST /v1/route and /v1/route/batch: embed, profile, score every model, rank, log."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Header, HTTPException, status

from profiling.conversation import conversation_vector
from profiling.decision import Decision
from profiling.embedder import Vectors
from profiling.scoring import Constraints
from service.api.deps import BatcherDep, DecisionLogDep, MetricsDep, RuntimeDep
from service.api.limits import check_counts, limit_texts
from service.api.schemas import BatchRouteRequest, BatchRouteResponse, RouteRequest, RouteResponse, decision_response
from service.metrics import Metrics
from service.routing.decision_log import DecisionLog
from service.routing.engine import NoModelsError, RouteOptions
from service.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["routing"])
CallerHeader = Annotated[str | None, Header(alias="X-Caller", max_length=200)]


def _turns(body: RouteRequest) -> list[int]:
    assert body.messages is not None
    kept = [i for i, m in enumerate(body.messages) if m.content.strip() and m.role != "system"]
    return kept or list(range(len(body.messages)))


def _texts(body: RouteRequest) -> tuple[list[str], list[str]]:
    if body.messages is None:
        return [body.query or ""], ["user"]
    turns = [body.messages[i] for i in _turns(body)]
    return [m.content for m in turns], [m.role for m in turns]


def _limited(runtime: Runtime, bodies: list[RouteRequest]) -> tuple[list[str], list[list[str]]]:
    """The texts to embed, checked against the limits first (422), and each request's fields that were cut."""
    prefixes = [f"requests[{i}]." if len(bodies) > 1 else "" for i in range(len(bodies))]
    check_counts(runtime.settings, [len(b.messages) if b.messages else 1 for b in bodies], prefixes)
    texts: list[str] = []
    cut: list[list[str]] = []
    for prefix, body in zip(prefixes, bodies, strict=True):
        if body.messages is None:
            pairs = [(f"{prefix}query", body.query or "")]
        else:
            pairs = [(f"{prefix}messages[{i}].content", body.messages[i].content) for i in _turns(body)]
        kept, long = limit_texts(runtime.settings, pairs)
        texts.extend(kept)
        cut.append(long)
    return texts, cut


def _options(body: RouteRequest) -> RouteOptions:
    return RouteOptions(
        cost_weight=body.cost_weight,
        constraints=Constraints(
            candidates=frozenset(body.candidates) if body.candidates is not None else None,
            max_cost_usd=body.max_cost,
            exclude_models=frozenset(body.exclude_models),
            exclude_providers=frozenset(body.exclude_providers),
        ),
        top_n=body.top_n,
        explain=body.explain,
    )


def _query_vectors(bodies: list[RouteRequest], vectors: Vectors) -> tuple[Vectors, np.ndarray]:
    """One vector per request (conversations folded) and each request's input length in characters."""
    rows, chars, offset = [], [], 0
    for body in bodies:
        texts, roles = _texts(body)
        part = vectors[offset : offset + len(texts)]
        offset += len(texts)
        rows.append(part[0] if len(texts) == 1 else conversation_vector(part, roles))
        chars.append(sum(len(m.content) for m in body.messages) if body.messages else len(body.query or ""))
    return np.stack(rows).astype(np.float32), np.asarray(chars, np.float64)


def _check_names(runtime: Runtime, bodies: list[RouteRequest]) -> None:
    """Candidates must name registered, active models: a typo should not silently shrink the pool."""
    if not runtime.router.loaded:
        return
    known = set(runtime.router.state.models.names)
    for position, body in enumerate(bodies):
        unknown = sorted(set(body.candidates or ()) - known)
        if unknown:
            prefix = f"requests[{position}]." if len(bodies) > 1 else ""
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"{prefix}candidates: not registered or not active: {unknown[:10]}",
            )


def _decide(runtime: Runtime, bodies: list[RouteRequest], vectors: Vectors) -> list[Decision]:
    query_vectors, chars = _query_vectors(bodies, vectors)
    try:
        decisions = runtime.router.decide(query_vectors, chars, [_options(b) for b in bodies])
    except NoModelsError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"{exc}: import data or register models first"
        ) from exc
    for position, decision in enumerate(decisions):
        if decision.model is None:
            prefix = f"requests[{position}]." if len(bodies) > 1 else ""
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"{prefix}candidates/max_cost/exclude_*: no registered model satisfies the constraints",
            )
    return decisions


def _log(
    log: DecisionLog, metrics: Metrics, body: RouteRequest, decision: Decision, latency_ms: float, caller: str | None
) -> None:
    texts, _ = _texts(body)
    best = decision.alternatives[0]
    log.append(
        {
            "id": decision.decision_id,
            "created_at": datetime.now(UTC),
            "query_hash": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
            "chosen_model": decision.model,
            "cost_weight": decision.cost_weight,
            "estimated_cost_usd": best.cost_usd,
            "estimated_p_correct": best.p_correct,
            "candidates": [
                {"model": a.model, "score": a.utility, "p_correct": a.p_correct, "cost_usd": a.cost_usd}
                for a in decision.alternatives
            ],
            "profile": {
                "capabilities": {d.name: d.weight for d in decision.profile.capabilities},
                "domains": {d.name: d.weight for d in decision.profile.domains},
            },
            "latency_ms": latency_ms,
            "caller": caller,
        }
    )
    metrics.chosen.labels(decision.model).inc()
    metrics.decisions_pending.set(log.pending)


@router.post("/route")
async def route(
    body: RouteRequest,
    runtime: RuntimeDep,
    batcher: BatcherDep,
    log: DecisionLogDep,
    metrics: MetricsDep,
    x_caller: CallerHeader = None,
) -> RouteResponse:
    """Choose the model for one query (or chat) under the given cost knob and constraints."""
    started = time.perf_counter()
    texts, cut = _limited(runtime, [body])
    _check_names(runtime, [body])
    vectors = await batcher.embed(texts)
    decision = _decide(runtime, [body], vectors)[0]
    latency_ms = (time.perf_counter() - started) * 1000
    _log(log, metrics, body, decision, latency_ms, x_caller)
    metrics.route_requests.labels("route", "ok").inc()
    metrics.route_latency.labels("route").observe(latency_ms / 1000)
    return decision_response(decision, latency_ms).model_copy(update={"truncated": cut[0]})


@router.post("/route/batch")
async def route_batch(
    body: BatchRouteRequest,
    runtime: RuntimeDep,
    batcher: BatcherDep,
    log: DecisionLogDep,
    metrics: MetricsDep,
    x_caller: CallerHeader = None,
) -> BatchRouteResponse:
    """Many queries in one call: one batched embedding, one matrix pass over all models."""
    limit = runtime.settings.route_batch_max
    if len(body.requests) > limit:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"requests: at most {limit} per batch (got {len(body.requests)})",
        )
    started = time.perf_counter()
    texts, cut = _limited(runtime, body.requests)
    _check_names(runtime, body.requests)
    # Bulk lane: cut into capped, length-sorted calls that let interactive /v1/route requests go first.
    vectors = await batcher.embed(texts, bulk=True)
    decisions = _decide(runtime, body.requests, vectors)
    latency_ms = (time.perf_counter() - started) * 1000
    for request_body, decision in zip(body.requests, decisions, strict=True):
        _log(log, metrics, request_body, decision, latency_ms, x_caller)
    metrics.route_requests.labels("route_batch", "ok").inc()
    metrics.route_latency.labels("route_batch").observe(latency_ms / 1000)
    return BatchRouteResponse(
        decisions=[
            decision_response(d, latency_ms).model_copy(update={"truncated": c})
            for d, c in zip(decisions, cut, strict=True)
        ]
    )
