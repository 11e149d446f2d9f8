"""`capprof bench`: routing speed on this machine, against the embedding cost it is measured by.

Everything after the embedding should cost a small fraction of it, so each figure is reported next
to the embedding-only figure measured in the same run.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from profiling.knn import OutcomeTable
from profiling.model_sat import ModelSatConfig
from service.registry.aptitude import build_test
from service.registry.catalog import load_dimension_seed
from service.registry.checkpoints import activate, train_checkpoint
from service.routing.engine import RouteOptions, RoutingEngine
from service.routing.state import RouterState
from service.runtime import Runtime, upgrade_database
from service.settings import Settings

SHORT_QUERIES = [e for c in load_dimension_seed()["capabilities"] for e in c["exemplars"]]


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _query(i: int) -> str:
    """Short queries that never repeat exactly, so no cache can help."""
    return f"{SHORT_QUERIES[i % len(SHORT_QUERIES)]} (#{i})"


def scaled_state(state: RouterState, n_models: int, seed: int = 0) -> RouterState:
    """The real state with its model pool tiled (and jittered) up to n_models, for scoring-scale timing."""
    rng = np.random.default_rng(seed)
    take = np.arange(n_models) % len(state.models)
    models = state.models
    tiled = replace(
        models,
        names=tuple(f"{models.names[i]}#{k}" for k, i in enumerate(take)),
        providers=tuple(models.providers[i] for i in take),
        input_usd_per_mtok=models.input_usd_per_mtok[take] * rng.uniform(0.5, 1.5, n_models),
        output_usd_per_mtok=models.output_usd_per_mtok[take] * rng.uniform(0.5, 1.5, n_models),
        typical_output_tokens=models.typical_output_tokens[take],
        mean_cost_usd=models.mean_cost_usd[take],
    )
    stage2 = state.stage2
    keys = [str(k) for k in range(n_models)]  # the tiled pool's model ids
    if stage2 is not None:
        stage2 = replace(
            stage2,
            model_embeddings=stage2.model_embeddings[take],
            has_aptitude=stage2.has_aptitude[take],
            trust=stage2.trust[take],
            heads=None if stage2.heads is None else stage2.heads.taken(take, keys),
            checkpoint_heads=None if stage2.checkpoint_heads is None else stage2.checkpoint_heads.taken(take, keys),
            head_shares=None if stage2.head_shares is None else stage2.head_shares[take],
        )
    return replace(
        state,
        stage2=stage2,
        models=tiled,
        model_ids=np.arange(n_models, dtype=np.int64),
        profile=np.clip(state.profile[take] + rng.normal(0, 0.02, (n_models, state.profile.shape[1])), 0, 1),
        means=state.means[take],
        outcomes=OutcomeTable(state.outcomes.filled[:, take], state.outcomes.known[:, take]),
    )


def free_port() -> int:
    """A free loopback port for a benchmark server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _http_load(url: str, concurrency: int, total: int) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(total))
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def worker() -> None:
            for i in counter:
                started = time.perf_counter()
                response = await client.post("/v1/route", json={"query": _query(10_000 + i)})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def _serve(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CAPPROF_DATA_DIR": str(settings.data_dir),
        "CAPPROF_DATABASE_URL": settings.resolved_database_url,
        "CAPPROF_QDRANT_PATH": settings.resolved_qdrant_path,
        "CAPPROF_DEVICE": settings.device,
        "CAPPROF_RATE_LIMIT_PER_S": "0",  # the bench measures capacity; one caller's limit would cap it
    }
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_ready(url: str, timeout_s: float = 120) -> None:
    """Polls /readyz until the server at `url` answers 200, or raises after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"benchmark server {url} did not become ready")


def run_bench(data: Path, quick: bool, device: str, log: Callable[[str], None]) -> dict[str, Any]:
    from service.registry.importer import import_data

    n_single = 60 if quick else 300
    n_batches = 4 if quick else 16
    batch_size = 64
    results: dict[str, Any] = {"quick": quick, "data": str(data)}
    with tempfile.TemporaryDirectory(prefix="capprof-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), device=device, decision_flush_interval_s=0.5)
        upgrade_database(settings.resolved_database_url)
        runtime = Runtime(settings)
        embedder = runtime.embedder
        results["device"] = getattr(embedder.inner, "device", "?")
        log(f"importing {data} into a scratch SQLite + embedded Qdrant ...")
        with runtime.transaction() as session:
            import_data(session, runtime.store, embedder, settings, data, progress=False)
            log("building the aptitude test and training a Model-SAT checkpoint (stage 2 on, as served) ...")
            build_test(session, runtime.store)
            checkpoint = train_checkpoint(
                session, runtime.store, embedder, settings, ModelSatConfig(epochs=3 if quick else 20)
            )
            activate(session, checkpoint.version)
        runtime.reload_router()
        results["reranker_active"] = runtime.router.state.stage2 is not None
        router = runtime.router
        embed = embedder.embed_uncached
        for i in range(5):
            embed([_query(i)])

        def route_one(i: int) -> None:
            text = _query(i)
            router.decide(embed([text]), np.array([len(text)], float), [RouteOptions()])

        log("one short query at a time: embedding only and full route, interleaved ...")
        embed_times: list[float] = []
        route_times: list[float] = []
        for i in range(n_single):  # alternating cancels drift in machine load between the two
            embed_times.append(_seconds(partial(embed, [_query(2 * i)])))
            route_times.append(_seconds(partial(route_one, 2 * i + 1)))
        results["embed_p50_ms"], results["embed_p99_ms"] = _percentiles(embed_times)
        results["route_p50_ms"], results["route_p99_ms"] = _percentiles(route_times)

        batches = [[_query(b * batch_size + j) for j in range(batch_size)] for b in range(n_batches)]

        def route_batch(b: int) -> None:
            texts = batches[b]
            vectors = embed(texts)
            router.decide(vectors, np.array([len(t) for t in texts], float), [RouteOptions()] * len(texts))

        log("batches of 64: embedding only and full route, interleaved ...")
        embed_s = route_s = 0.0
        for b in range(n_batches):
            embed_s += _seconds(partial(embed, batches[b]))
            route_s += _seconds(partial(route_batch, b))
        results["embed_batch_qps"] = n_batches * batch_size / embed_s
        results["route_batch_qps"] = n_batches * batch_size / route_s

        log("stage-1 scoring at 30, 1,000 and 10,000 models ...")
        real_state = router.state
        vectors = embed([_query(i) for i in range(32)])
        chars = np.full(1, 80.0)
        score_ms: dict[str, float] = {}
        for n_models in (30, 1000, 10_000):
            scaled = RoutingEngine(settings)
            scaled._state = scaled_state(real_state, n_models)
            scaled.decide(vectors[:1], chars, [RouteOptions()])
            times = [
                _seconds(partial(scaled.decide, vectors[i % 32 : i % 32 + 1], chars, [RouteOptions()]))
                for i in range(40)
            ]
            score_ms[str(n_models)] = float(np.median(times) * 1000)
        results["score_ms_per_query"] = score_ms
        results["models_in_state"] = len(real_state.models)
        results["evaluation_queries_in_state"] = real_state.evaluated_queries
        runtime.close()

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log("HTTP, server in its own process ...")
        server = _serve(settings, port)
        try:
            wait_ready(url)
            asyncio.run(_http_load(url, 4, 20))  # warm-up
            n_http = 60 if quick else 300
            results["http_p50_ms_c1"], results["http_p99_ms_c1"] = _percentiles(asyncio.run(_http_load(url, 1, n_http)))
            started = time.perf_counter()
            c16 = asyncio.run(_http_load(url, 16, n_http * 2))
            results["http_qps_c16"] = len(c16) / (time.perf_counter() - started)
            results["http_p50_ms_c16"], results["http_p99_ms_c16"] = _percentiles(c16)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["route_over_embed_p50"] = results["route_p50_ms"] / results["embed_p50_ms"]
    results["route_over_embed_batch_qps"] = results["route_batch_qps"] / results["embed_batch_qps"]
    return results
