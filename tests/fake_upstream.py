"""A small OpenAI-shaped upstream for tests and the gateway benchmark, served by uvicorn on loopback.

The upstream model name picks the behaviour: "plain" answers, "slow" waits `slow_s` before answering, "fail500" and
"busy429" fail, "gated" streams one chunk and then waits for the test to read it. Any model answers a prompt found in
`answers` with that text (onboarding). A temperature above 2 is the request's fault: 400, as OpenAI says it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

PROMPT_TOKENS, COMPLETION_TOKENS = 120, 30
BAD_REQUEST = {
    "error": {"message": "temperature: must be at most 2", "type": "invalid_request_error", "param": "temperature"}
}


@dataclass
class UpstreamLog:
    seen: list[dict[str, Any]] = field(default_factory=list)  # model, authorization, stream of each request
    gate: threading.Event = field(default_factory=threading.Event)
    gate_opened_in_time: bool | None = None


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }


def _chunk(model: str, content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def make_upstream(
    log: UpstreamLog,
    answers: dict[str, str] | None = None,
    slow_s: float = 2.0,
    work_s: float = 0.0,
    failing_prompts: set[str] | None = None,
) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Response:
        body = await request.json()
        model, stream = body["model"], bool(body.get("stream"))
        log.seen.append({"model": model, "authorization": request.headers.get("authorization"), "stream": stream})
        if body.get("temperature", 0) > 2:
            return JSONResponse(BAD_REQUEST, status_code=400)
        if model == "fail500" or body["messages"][-1]["content"] in (failing_prompts or ()):
            return JSONResponse({"error": {"message": "internal error", "type": "server_error"}}, status_code=500)
        if model == "busy429":
            return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}}, status_code=429)
        if model == "slow":
            await asyncio.sleep(slow_s)
        if work_s:
            await asyncio.sleep(work_s)
        prompt = body["messages"][-1]["content"]
        text = (answers or {}).get(prompt, f"echo: {prompt}")
        if not stream:
            return JSONResponse(_completion(model, text))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            words = text.split(" ")
            for i, word in enumerate(words):
                yield _chunk(model, word if i == 0 else " " + word)
                if model == "gated" and i == 0:
                    deadline = time.monotonic() + 10
                    while not log.gate.is_set() and time.monotonic() < deadline:
                        await asyncio.sleep(0.01)
                    log.gate_opened_in_time = log.gate.is_set()
            yield _chunk(model, None, "stop")
            if include_usage:
                usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS}
                tail = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                yield b"data: " + json.dumps(tail).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serves `app` on a free loopback port in a thread; yields its base URL; stops it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("test server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
