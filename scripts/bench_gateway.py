"""The gateway's own latency: gateway time minus upstream time, on loopback, bounded.

    .venv/bin/python scripts/bench_gateway.py [--quick] [--json docs/results/bench_gateway.json]

Three processes: a stub OpenAI-shaped upstream (tests/fake_upstream.py, answering after a fixed `--work-ms`), capprof
(`capprof serve` on a scratch SQLite + embedded Qdrant holding the demo sample, every model pointed at the stub) and
this load generator. Each request is sent straight to the upstream and through the gateway (a named model: forwarding
only; `auto`: routing + forwarding), interleaved so load drift hits all alike; overhead = gateway - direct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.jobs.bench import _serve, free_port, wait_ready  # noqa: E402
from service.registry.importer import import_data  # noqa: E402
from service.runtime import Runtime, upgrade_database  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store.orm import LlmModel  # noqa: E402

PROMPT = "Explain in one paragraph why the sky looks blue during the day and red at sunset, for a curious child."


def _pct(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def _start_upstream(port: int, work_ms: float) -> subprocess.Popen[bytes]:
    code = (
        "import sys, uvicorn; sys.path.insert(0, sys.argv[1]);"
        "from tests.fake_upstream import UpstreamLog, make_upstream;"
        "uvicorn.run(make_upstream(UpstreamLog(), work_s=float(sys.argv[3]) / 1000), host='127.0.0.1',"
        " port=int(sys.argv[2]), log_level='warning')"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(ROOT), str(port), str(work_ms)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _body(model: str, stream: bool, i: int) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": f"{PROMPT} (#{i})"}], "stream": stream}


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[float, float]:
    """(time to first body byte, total time) of one request, seconds."""
    started = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for _ in response.aiter_raw():
            if first is None:
                first = time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started


async def _paths(upstream: str, gateway: str, model: str) -> dict[str, tuple[str, str]]:
    return {
        "direct": (f"{upstream}/v1/chat/completions", "plain"),
        "gateway_named": (f"{gateway}/openai/v1/chat/completions", model),
        "gateway_auto": (f"{gateway}/openai/v1/chat/completions", "auto"),
    }


async def _sequential(paths: dict[str, tuple[str, str]], n: int) -> dict[str, list[float]]:
    totals: dict[str, list[float]] = {name: [] for name in paths}
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(n):
            for name, (url, model) in paths.items():
                totals[name].append((await _one(client, url, _body(model, False, i)))[1])
    return totals


async def _concurrent_streams(
    paths: dict[str, tuple[str, str]], concurrency: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    """`concurrency` streams at once, path after path, for `rounds` rounds (interleaved by round)."""
    out: dict[str, dict[str, list[float]]] = {name: {"ttfb": [], "total": []} for name in paths}
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for r in range(rounds):
            for name, (url, model) in paths.items():
                results = await asyncio.gather(
                    *(_one(client, url, _body(model, True, r * concurrency + k)) for k in range(concurrency))
                )
                out[name]["ttfb"] += [first for first, _ in results]
                out[name]["total"] += [total for _, total in results]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--quick", action="store_true", help="fewer requests (under a minute after the import)")
    parser.add_argument("--work-ms", type=float, default=20.0, help="the stub upstream's answer time")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    n_seq, rounds = (60, 4) if args.quick else (300, 16)

    results: dict[str, Any] = {"quick": args.quick, "upstream_work_ms": args.work_ms}
    with tempfile.TemporaryDirectory(prefix="capprof-gateway-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), device="cpu", decision_flush_interval_s=0.5)
        upgrade_database(settings.resolved_database_url)
        upstream_port, gateway_port = free_port(), free_port()
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        runtime = Runtime(settings)
        print(f"importing {args.data} into a scratch store ...", file=sys.stderr)
        with runtime.transaction() as session:
            import_data(session, runtime.store, runtime.embedder, settings, args.data, progress=False)
            models = list(session.query(LlmModel))
            for m in models:
                m.endpoint_url, m.upstream_model = f"{upstream_url}/v1", "plain"
            named = models[0].name
        runtime.close()
        upstream = _start_upstream(upstream_port, args.work_ms)
        gateway = _serve(settings, gateway_port)
        try:
            gateway_url = f"http://127.0.0.1:{gateway_port}"
            wait_ready(gateway_url)
            paths = asyncio.run(_paths(upstream_url, gateway_url, named))
            asyncio.run(_sequential(paths, 10))  # warm-up: connections, embedder, caches
            print(f"{n_seq} plain requests per path, one at a time ...", file=sys.stderr)
            seq = asyncio.run(_sequential(paths, n_seq))
            print(f"16 concurrent streams x {rounds} rounds per path ...", file=sys.stderr)
            streams = asyncio.run(_concurrent_streams(paths, 16, rounds))
        finally:
            for process in (gateway, upstream):
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)

    results["sequential"] = {name: _pct(times) for name, times in seq.items()}
    results["streams_c16"] = {name: {"ttfb": _pct(v["ttfb"]), "total": _pct(v["total"])} for name, v in streams.items()}
    for name in ("gateway_named", "gateway_auto"):
        results[f"overhead_{name}"] = {
            "sequential": {
                k: round(results["sequential"][name][k] - results["sequential"]["direct"][k], 2)
                for k in ("p50_ms", "p99_ms")
            },
            "streams_c16_ttfb": {
                k: round(results["streams_c16"][name]["ttfb"][k] - results["streams_c16"]["direct"]["ttfb"][k], 2)
                for k in ("p50_ms", "p99_ms")
            },
            "streams_c16_total": {
                k: round(results["streams_c16"][name]["total"][k] - results["streams_c16"]["direct"]["total"][k], 2)
                for k in ("p50_ms", "p99_ms")
            },
        }
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
