"""POST /v1/route and /v1/route/batch: embed, profile, score every model, rank, log."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select

from profiling.conversation import conversation_vector
from profiling.decision import Decision
from profiling.embedder import Vectors
from profiling.scoring import Constraints
from service.api.auth import Caller, RouteKeyDep
from service.api.budget import enforce_budget
from service.api.deps import BatcherDep, DecisionLogDep, MetricsDep, RuntimeDep, SessionDep
from service.api.limits import check_counts, limit_texts
from service.api.responses import errors
from service.api.schemas import (
    BatchRouteRequest,
    BatchRouteResponse,
    OperatingPointOut,
    RouteRequest,
    RouteResponse,
    decision_response,
)
from service.metrics import Metrics
from service.routing.decision_log import DecisionLog
from service.routing.engine import NoModelsError, PresetError, RouteOptions, resolve_cost_weight
from service.routing.microbatch import MicroBatcher
from service.runtime import Runtime
from service.store.orm import OperatingPoint

router = APIRouter(prefix="/v1", tags=["routing"])


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


def _options(body: RouteRequest, presets: dict[str, float], caller: Caller, position: str = "") -> RouteOptions:
    """The request's options. lambda: the request's, else its preset, else the key's default lambda, else the
    default preset (balanced) once calibrated, else 0."""
    requested = body.cost_weight
    if requested is None and body.preset is None and caller.default_lambda is not None:
        requested = caller.default_lambda
    try:
        cost_weight, preset = resolve_cost_weight(requested, body.preset, presets)
    except PresetError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{position}{exc}") from exc
    return RouteOptions(
        cost_weight=cost_weight,
        preset=preset,
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


def _decide(
    runtime: Runtime, bodies: list[RouteRequest], vectors: Vectors, caller: Caller
) -> tuple[list[Decision], Vectors]:
    query_vectors, chars = _query_vectors(bodies, vectors)
    try:
        presets = runtime.router.state.presets
        positions = [f"requests[{i}]." if len(bodies) > 1 else "" for i in range(len(bodies))]
        options = [_options(b, presets, caller, p) for b, p in zip(bodies, positions, strict=True)]
        decisions = runtime.router.decide(query_vectors, chars, options)
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
    return decisions, query_vectors


def _log(
    runtime: Runtime,
    log: DecisionLog,
    metrics: Metrics,
    body: RouteRequest,
    decision: Decision,
    vector: np.ndarray,
    latency_ms: float,
    caller: Caller,
    extra: dict[str, Any] | None = None,
) -> None:
    """Queues the decision row; the gateway adds what served it (`extra`: served model, fallbacks, actual cost)."""
    texts, _ = _texts(body)
    best = decision.alternatives[0]
    text = "\n".join(texts)
    log.append(
        (extra or {})
        | {
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
            "caller": caller.name,
            "key_name": caller.name,
            "caller_label": caller.label,
            "baseline_max_cost_usd": decision.baseline_max_cost_usd,
            "baseline_best_model": decision.baseline_best_model,
            "baseline_best_cost_usd": decision.baseline_best_cost_usd,
            # for feedback, until the retention purge (service/registry/retention.py)
            "_vector": np.asarray(vector, np.float32).tobytes(),
            "_text": text if runtime.settings.store_query_text else None,
            "_dimensions": [(d.id, d.weight) for d in (*decision.profile.capabilities, *decision.profile.domains)],
        }
    )
    metrics.chosen.labels(decision.model).inc()
    metrics.decisions_pending.set(log.pending)


@router.get("/presets", responses=errors(401, 403, 422, 503))
def presets(session: SessionDep, _: RouteKeyDep) -> list[OperatingPointOut]:
    """The calibrated operating points a route request may name instead of a lambda (empty until calibrated)."""
    points = session.scalars(select(OperatingPoint).order_by(OperatingPoint.validation_cost_per_query))
    return [OperatingPointOut.model_validate(p, from_attributes=True) for p in points]


@router.post("/route", responses=errors(401, 403, 422, 429, 503))
async def route(
    body: RouteRequest,
    runtime: RuntimeDep,
    batcher: BatcherDep,
    log: DecisionLogDep,
    metrics: MetricsDep,
    caller: RouteKeyDep,
) -> RouteResponse:
    """Choose the model for one query (or chat) under the given cost knob and constraints."""
    return await route_one(body, runtime, batcher, log, metrics, caller)


async def route_one(
    body: RouteRequest, runtime: Runtime, batcher: MicroBatcher, log: DecisionLog, metrics: Metrics, caller: Caller
) -> RouteResponse:
    """POST /v1/route's whole path (limits, names, budget, embedding, decision, log); the console's "try a query"
    uses it too, so what it shows is what the API would answer."""
    started = time.perf_counter()
    texts, cut = _limited(runtime, [body])
    _check_names(runtime, [body])
    if caller.monthly_budget_usd is not None:
        await asyncio.to_thread(enforce_budget, runtime, log, metrics, caller)
    vectors = await batcher.embed(texts)
    decisions, query_vectors = _decide(runtime, [body], vectors, caller)
    latency_ms = (time.perf_counter() - started) * 1000
    _log(runtime, log, metrics, body, decisions[0], query_vectors[0], latency_ms, caller)
    decision = decisions[0]
    metrics.route_requests.labels("route", "ok").inc()
    metrics.route_latency.labels("route").observe(latency_ms / 1000)
    return decision_response(decision, latency_ms).model_copy(update={"truncated": cut[0]})


@router.post("/route/batch", responses=errors(401, 403, 422, 429, 503))
async def route_batch(
    body: BatchRouteRequest,
    runtime: RuntimeDep,
    batcher: BatcherDep,
    log: DecisionLogDep,
    metrics: MetricsDep,
    caller: RouteKeyDep,
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
    if caller.monthly_budget_usd is not None:
        await asyncio.to_thread(enforce_budget, runtime, log, metrics, caller)
    # Bulk lane: cut into capped, length-sorted calls that let interactive /v1/route requests go first.
    vectors = await batcher.embed(texts, bulk=True)
    decisions, query_vectors = _decide(runtime, body.requests, vectors, caller)
    latency_ms = (time.perf_counter() - started) * 1000
    for request_body, decision, vector in zip(body.requests, decisions, query_vectors, strict=True):
        _log(runtime, log, metrics, request_body, decision, vector, latency_ms, caller)
    metrics.route_requests.labels("route_batch", "ok").inc()
    metrics.route_latency.labels("route_batch").observe(latency_ms / 1000)
    return BatchRouteResponse(
        decisions=[
            decision_response(d, latency_ms).model_copy(update={"truncated": c})
            for d, c in zip(decisions, cut, strict=True)
        ]
    )
