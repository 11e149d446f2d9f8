"""Bounded loopback load test: closed-loop clients against `capprof serve` on a family's real query texts.

    .venv/bin/python scripts/load.py --family ../shared/data/zeroeval --clients 1,8,64 --seconds 15
    .venv/bin/python scripts/load.py --family ../shared/data/zeroeval --scenario mixed

Without --url it builds a scratch data dir (SQLite + embedded Qdrant), imports the family (reusing an embedding
cache when given), starts `capprof serve` on a free loopback port, measures, and stops it. Each client presents its
own API key (`Authorization: Bearer KEY`), so the per-caller rate limit sees N callers, as in production.
The keys are created through the admin API when the run starts and revoked at its end (`--admin-key`, default the
development one): an unknown key is refused (401), so made-up tokens would measure only errors.
`mixed` measures short-query latency alone and while another caller sends large /v1/route/batch requests of the
family's longest texts. Prints a markdown table; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _queries(family: Path) -> list[str]:
    with gzip.open(family / "queries.csv.gz", "rt", encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(
    family: Path, cache: Path | None, extra_env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str, Path]:
    scratch = Path(tempfile.mkdtemp(prefix="capprof-load-"))
    env = {**os.environ, "CAPPROF_DATA_DIR": str(scratch), "CAPPROF_DEVICE": os.environ.get("CAPPROF_DEVICE", "auto")}
    env.update(extra_env)
    if cache is not None and cache.exists():
        (scratch / "embeddings").mkdir(parents=True)
        shutil.copy(cache, scratch / "embeddings" / cache.name)
    cli = [sys.executable, "-m", "service.cli"]
    subprocess.run([*cli, "db", "upgrade"], cwd=REPO, env=env, check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run([*cli, "import", str(family), "--no-progress"], cwd=REPO, env=env, check=True)
    print(f"imported {family.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    port = _free_port()
    log = (scratch / "serve.log").open("wb")
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return server, base, scratch
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit(f"server not ready; see {scratch / 'serve.log'}")


def _create_keys(base: str, admin_key: str, count: int) -> dict[str, str]:
    """`count` API keys created through the admin API, by name; the names are unique to this run."""
    run = time.strftime("%Y%m%d%H%M%S")
    keys = {}
    with httpx.Client(base_url=base, timeout=30, headers={"X-Admin-Key": admin_key}) as http:
        for n in range(count):
            created = http.post("/admin/keys", json={"name": f"load-{run}-{n}"})
            created.raise_for_status()
            keys[created.json()["name"]] = created.json()["key"]
    return keys


def _revoke_keys(base: str, admin_key: str, names: list[str]) -> None:
    with httpx.Client(base_url=base, timeout=30, headers={"X-Admin-Key": admin_key}) as http:
        for name in names:
            http.delete(f"/admin/keys/{name}")


async def _client(
    http: httpx.AsyncClient, key: str, n: int, texts: list[str], until: float, record: bool, out: dict[str, list[float]]
) -> None:
    rng = random.Random(n)
    headers = {"Authorization": f"Bearer {key}"}
    while time.perf_counter() < until:
        started = time.perf_counter()
        try:
            response = await http.post("/v1/route", json={"query": rng.choice(texts)}, headers=headers)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        if record:
            out["latency" if ok else "errors"].append(time.perf_counter() - started)


async def _level(
    base: str, keys: list[str], clients: int, texts: list[str], seconds: float, warmup: float
) -> dict[str, float]:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    out: dict[str, list[float]] = {"latency": [], "errors": []}
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        now = time.perf_counter()
        await asyncio.gather(*(_client(http, keys[n], n, texts, now + warmup, False, out) for n in range(clients)))
        start = time.perf_counter()
        await asyncio.gather(*(_client(http, keys[n], n, texts, start + seconds, True, out) for n in range(clients)))
        elapsed = time.perf_counter() - start
    latency = np.asarray(out["latency"]) * 1000
    return {
        "clients": clients,
        "throughput": len(latency) / elapsed,
        "p50": float(np.percentile(latency, 50)) if len(latency) else float("nan"),
        "p99": float(np.percentile(latency, 99)) if len(latency) else float("nan"),
        "errors": len(out["errors"]),
        "requests": len(latency) + len(out["errors"]),
    }


async def _batches(base: str, key: str, long_texts: list[str], size: int, until: float, took: list[float]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=300) as http:
        rng = random.Random(7)
        while time.perf_counter() < until:
            body = {"requests": [{"query": t} for t in rng.sample(long_texts, size)]}
            started = time.perf_counter()
            response = await http.post("/v1/route/batch", json=body, headers={"Authorization": f"Bearer {key}"})
            response.raise_for_status()
            took.append(time.perf_counter() - started)


async def _mixed(base: str, keys: list[str], texts: list[str], seconds: float, batch: int) -> list[str]:
    short = [t for t in texts if len(t) < 200] or sorted(texts, key=len)[:100]
    long_texts = sorted(texts, key=len)[-max(batch * 2, 64) :]
    alone = await _level(base, keys, 4, short, seconds, 2)
    took: list[float] = []
    until = time.perf_counter() + seconds + 3
    bulk = asyncio.create_task(_batches(base, keys[-1], long_texts, batch, until, took))
    await asyncio.sleep(1)
    during = await _level(base, keys, 4, short, seconds, 0)
    await bulk
    mean_chars = int(np.mean([len(t) for t in long_texts]))
    return [
        "| short queries (4 clients) | throughput q/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| alone | {alone['throughput']:.1f} | {alone['p50']:.0f} | {alone['p99']:.0f} | {alone['errors']} |",
        f"| while /v1/route/batch of {batch} texts (~{mean_chars} chars) runs back to back | {during['throughput']:.1f} | "
        f"{during['p50']:.0f} | {during['p99']:.0f} | {during['errors']} |",
        f"\none batch took {np.mean(took):.1f} s on average ({len(took)} batches)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", type=Path, default=REPO.parent / "shared" / "data" / "zeroeval")
    parser.add_argument("--url", help="an already running server (loopback); default: start one")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per level (bounded)")
    parser.add_argument("--scenario", choices=["levels", "mixed"], default="levels")
    parser.add_argument("--batch", type=int, default=128, help="texts per /v1/route/batch in the mixed scenario")
    parser.add_argument(
        "--embedding-cache", type=Path, default=REPO / ".capprof" / "test-embeddings" / "all-MiniLM-L6-v2.npz"
    )
    parser.add_argument("--server-env", action="append", default=[], help="NAME=VALUE for the started server")
    parser.add_argument(
        "--admin-key", default=os.environ.get("CAPPROF_ADMIN_KEY", "changethis"), help="creates the clients' API keys"
    )
    args = parser.parse_args()
    if args.seconds > 120:
        raise SystemExit("--seconds: at most 120 per level (the load must stay bounded)")
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        raise SystemExit("--url: loopback only")
    texts = _queries(args.family)
    server = None
    base = args.url
    if base is None:
        extra = dict(item.split("=", 1) for item in args.server_env)
        server, base, scratch = _start_server(args.family, args.embedding_cache, extra)
    named: dict[str, str] = {}
    try:
        most = max([4, *(int(c) for c in args.clients.split(","))])
        named = _create_keys(base, args.admin_key, most + 1)
        keys = list(named.values())  # one per client; the last is the bulk sender's in the mixed scenario
        if args.scenario == "mixed":
            lines = asyncio.run(_mixed(base, keys, texts, args.seconds, args.batch))
        else:
            lines = [
                "| clients | throughput q/s | p50 ms | p99 ms | errors / requests |",
                "| ---: | ---: | ---: | ---: | ---: |",
            ]
            for clients in [int(c) for c in args.clients.split(",")]:
                r = asyncio.run(_level(base, keys, clients, texts, args.seconds, 3))
                lines.append(
                    f"| {clients} | {r['throughput']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | "
                    f"{r['errors']} / {r['requests']} |"
                )
                print(lines[-1], file=sys.stderr)
        print("\n".join(lines))
    finally:
        if named:
            _revoke_keys(base, args.admin_key, list(named))
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
