"""`capprof bench --replicas`: two `capprof serve` replicas on one database, under a steady write load.

Measures replica A's routing throughput with and without ~50 evaluation records per second written through
replica B (windows interleaved, so drift in machine load hits both alike), how many refreshes A ran for those
writes (coalescing), and the refresh latency: a write through B until A serves its generation.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import select

from profiling.model_sat import ModelSatConfig
from service.jobs.bench import free_port, wait_ready
from service.registry.aptitude import build_test
from service.registry.catalog import load_dimension_seed
from service.registry.checkpoints import activate, train_checkpoint
from service.runtime import Runtime, upgrade_database
from service.settings import Settings
from service.store.orm import EvalQuery, LlmModel

ADMIN_KEY = "bench-admin-key"
SHORT_QUERIES = [e for c in load_dimension_seed()["capabilities"] for e in c["exemplars"]]


def _start(name: str, root: Path, database_url: str, cache: Path, device: str, interval: float) -> tuple[Any, str]:
    data_dir = root / name
    (data_dir / "embeddings").mkdir(parents=True)
    for file in cache.glob("*.npz"):
        shutil.copy(file, data_dir / "embeddings" / file.name)
    port = free_port()
    env = {
        **os.environ,
        "CAPPROF_DATA_DIR": str(data_dir),
        "CAPPROF_DATABASE_URL": database_url,
        "CAPPROF_QDRANT_PATH": str(data_dir / "qdrant"),  # embedded Qdrant: one folder per replica
        "CAPPROF_DEVICE": device,
        "CAPPROF_ADMIN_KEY": ADMIN_KEY,
        "CAPPROF_REFRESH_INTERVAL_S": str(interval),
        "CAPPROF_RATE_LIMIT_PER_S": "0",  # every bench request presents the admin key: one caller, capped at 50/s
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


async def _route_window(url: str, concurrency: int, seconds: float, offset: int) -> int:
    """Route requests answered by `url` in a window of `seconds` with `concurrency` clients."""
    done = 0
    stop = time.perf_counter() + seconds
    counter = iter(range(offset, offset + 10_000_000))
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def worker() -> None:
            nonlocal done
            for i in counter:
                if time.perf_counter() >= stop:
                    return
                query = f"{SHORT_QUERIES[i % len(SHORT_QUERIES)]} (#{i})"
                response = await client.post("/v1/route", json={"query": query})
                response.raise_for_status()
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def _write_load(
    url: str,
    targets: list[tuple[str, str, str]],
    per_second: int,
    per_request: int,
    stop: asyncio.Event,
    errors: list[int],
) -> int:
    """Posts `per_second` evaluation records per second (in requests of `per_request`) until stopped.

    Requests leave on schedule whether or not earlier ones have been answered (an open-loop load, at most
    64 in flight), so a slow replica does not quietly lower the write rate.
    """
    written = 0
    rng = random.Random(7)
    interval = per_request / per_second
    in_flight: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(base_url=url, timeout=60, headers={"X-Admin-Key": ADMIN_KEY}) as client:

        async def post(model: str, items: list[dict[str, Any]]) -> None:
            nonlocal written
            response = await client.post(f"/v1/models/{model}/evaluations", json={"evaluations": items})
            if response.status_code == 503:  # a store refused (SQLite under writers from two processes): counted
                errors.append(503)
                return
            response.raise_for_status()
            written += len(items)

        next_at = time.perf_counter()
        while not stop.is_set():
            model = rng.choice(targets)[0]
            items = [
                {"benchmark": b, "query_id": q, "score": float(rng.random() < 0.5)}
                for _, b, q in rng.sample(targets, per_request)
            ]
            if len(in_flight) < 64:
                task = asyncio.create_task(post(model, items))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(*in_flight)
    return written


async def _window_with_writes(
    route_url: str,
    write_url: str,
    targets: list[tuple[str, str, str]],
    concurrency: int,
    seconds: float,
    offset: int,
    errors: list[int],
) -> tuple[int, int]:
    stop = asyncio.Event()
    writer = asyncio.create_task(_write_load(write_url, targets, 50, 5, stop, errors))
    routed = await _route_window(route_url, concurrency, seconds, offset)
    stop.set()
    return routed, await writer


def _readyz(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/readyz", timeout=10, headers={"X-Admin-Key": ADMIN_KEY}).json()  # refresh counts: admin


def _refresh_latency(a: str, b: str, targets: list[tuple[str, str, str]], samples: int) -> list[float]:
    """Seconds from a write's response on B until A serves a generation at least as new."""
    rng = random.Random(11)
    latencies = []
    with httpx.Client(timeout=30, headers={"X-Admin-Key": ADMIN_KEY}) as client:
        for _ in range(samples):
            model, benchmark, query = rng.choice(targets)
            item = {"benchmark": benchmark, "query_id": query, "score": float(rng.random() < 0.5)}
            for _attempt in range(3):  # SQLite may refuse a write racing another process's: try again
                response = client.post(f"{b}/v1/models/{model}/evaluations", json={"evaluations": [item]})
                if response.status_code != 503:
                    break
            response.raise_for_status()
            written = time.perf_counter()
            generation = client.get(f"{b}/readyz").json()["generation"]
            while client.get(f"{a}/readyz").json()["generation"] < generation:
                time.sleep(0.005)
            latencies.append(time.perf_counter() - written)
            time.sleep(rng.uniform(0.0, 0.5))  # spread the writes over the watcher's phase
    return latencies


def run_replica_bench(
    data: Path, quick: bool, device: str, database_url: str | None, log: Callable[[str], None]
) -> dict[str, Any]:
    """Seeds a scratch store from `data`, starts two replicas, and measures them (see the module docstring)."""
    interval = 1.0
    windows = 2 if quick else 3
    window_s = 6.0 if quick else 12.0
    concurrency = 8
    results: dict[str, Any] = {"quick": quick, "data": str(data), "refresh_interval_s": interval}
    with tempfile.TemporaryDirectory(prefix="capprof-replicas-") as tmp:
        root = Path(tmp)
        settings = Settings(data_dir=root / "seed", device=device, database_url=database_url)
        settings.data_dir.mkdir(parents=True)
        url = settings.resolved_database_url
        results["database"] = url.split(":", 1)[0]
        upgrade_database(url)
        runtime = Runtime(settings)
        log(f"importing {data} and training a quick Model-SAT checkpoint ...")
        from service.registry.importer import import_data

        with runtime.transaction() as session:
            import_data(session, runtime.store, runtime.embedder, settings, data, progress=False)
            build_test(session, runtime.store)
            activate(
                session,
                train_checkpoint(session, runtime.store, runtime.embedder, settings, ModelSatConfig(epochs=3)).version,
            )
            models = list(session.scalars(select(LlmModel.name).where(LlmModel.status == "active")))
            queries = session.execute(select(EvalQuery.benchmark, EvalQuery.external_id)).all()
        runtime.close()
        rng = random.Random(3)
        targets = [(rng.choice(models), b, q) for b, q in queries]

        log("starting replicas A and B (each with its own embedded Qdrant folder) ...")
        processes = []
        try:
            a_process, a = _start("a", root, url, settings.embedding_cache_dir, device, interval)
            processes.append(a_process)
            b_process, b = _start("b", root, url, settings.embedding_cache_dir, device, interval)
            processes.append(b_process)
            wait_ready(a, timeout_s=300)
            wait_ready(b, timeout_s=300)
            asyncio.run(_route_window(a, concurrency, 3.0, 0))  # warm-up

            quiet: list[float] = []
            loaded: list[float] = []
            written_total = 0
            write_errors: list[int] = []
            refreshes_under_load = 0
            refresh_s_under_load = 0.0
            offset = 100_000
            for w in range(windows):
                log(f"window {w + 1}/{windows}: routing on A without writes, then with 50 records/s through B ...")
                quiet.append(asyncio.run(_route_window(a, concurrency, window_s, offset)) / window_s)
                offset += 100_000
                before = _readyz(a)
                routed, written = asyncio.run(
                    _window_with_writes(a, b, targets, concurrency, window_s, offset, write_errors)
                )
                after = _readyz(a)
                offset += 100_000
                loaded.append(routed / window_s)
                written_total += written
                refreshes_under_load += after["refreshes"] - before["refreshes"]
                refresh_s_under_load += after["refresh_seconds"] - before["refresh_seconds"]
            results["route_qps_no_writes"] = float(np.mean(quiet))
            results["route_qps_with_writes"] = float(np.mean(loaded))
            results["route_qps_ratio"] = results["route_qps_with_writes"] / results["route_qps_no_writes"]
            results["route_qps_windows"] = {"no_writes": quiet, "with_writes": loaded}
            results["records_written_per_s"] = written_total / (windows * window_s)
            results["write_requests"] = written_total // 5
            results["write_requests_refused"] = len(write_errors)
            results["refreshes_on_a_under_writes"] = refreshes_under_load
            results["refresh_ms_mean_on_a"] = 1000 * refresh_s_under_load / max(refreshes_under_load, 1)
            results["refresh_cpu_share_on_a"] = refresh_s_under_load / (windows * window_s)

            samples = 15 if quick else 60
            log(f"refresh latency: {samples} writes through B, each until A serves it ...")
            latencies = np.asarray(_refresh_latency(a, b, targets, samples)) * 1000
            results["refresh_latency_p50_ms"] = float(np.percentile(latencies, 50))
            results["refresh_latency_p99_ms"] = float(np.percentile(latencies, 99))
            results["refresh_latency_max_ms"] = float(latencies.max())
        finally:
            for process in processes:
                os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                process.wait(timeout=30)
    return results
