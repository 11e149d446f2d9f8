"""Limits against overload: body size while streaming, a per-caller token bucket, and route input sizes.

The two middlewares run before FastAPI reads a body, so an oversized or over-quota request costs almost nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.settings import Settings

UNLIMITED_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, detail=f"body: larger than {limit} bytes")


async def _send_json(
    send: Send, status_code: int, body: dict[str, object], headers: Sequence[tuple[str, str]] = ()
) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": status_code, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class BodyLimit:
    """413 for a body over `max_bytes`: at once from Content-Length, else as soon as the streamed chunks pass it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, {"detail": f"body: larger than {self.max_bytes} bytes (Content-Length)"})
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _send_json(send, 413, {"detail": exc.detail})


def caller_identity(scope: Scope) -> str:
    """Who a request counts against: a hash of the key it presents, else its client address.

    Replaceable on its own (per-client API keys can map a key to its client id here); never returns the raw key.
    """
    key = _header(scope, b"x-admin-key")
    authorization = _header(scope, b"authorization")
    if key is None and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:]
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]
    client = scope.get("client")
    return "addr:" + (client[0] if client else "unknown")


class TokenBuckets:
    """One bucket per caller: `rate` tokens a second up to `burst`; the least recently seen callers are forgotten."""

    def __init__(self, rate: float, burst: int, max_callers: int = 100_000) -> None:
        self.rate, self.burst, self.max_callers = rate, burst, max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, caller: str, now: float | None = None) -> float:
        """0 when the request may go, else the seconds until a token is there."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[caller] = (tokens, now)
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
            return wait


class RateLimit:
    """429 with Retry-After once a caller's bucket is empty; health, metrics and docs are never limited."""

    def __init__(self, app: ASGIApp, rate: float, burst: int) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate, burst) if rate > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.buckets is None or scope["type"] != "http" or scope.get("path", "") in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(caller_identity(scope))
        if wait > 0:
            retry = max(1, math.ceil(wait))
            await _send_json(
                send,
                429,
                {"detail": f"rate limit: at most {self.buckets.rate:g} requests/s per caller; retry in {retry} s"},
                [("retry-after", str(retry))],
            )
            return
        await self.app(scope, receive, send)


def _problem(field: str, problem: str) -> dict[str, object]:
    parts: list[str | int] = ["body"]
    for token in field.replace("[", ".").replace("]", "").split("."):
        parts.append(int(token) if token.isdigit() else token)
    return {"loc": tuple(parts), "msg": problem, "type": "value_error"}


def limit_texts(settings: Settings, texts: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(texts to embed, fields cut) for (field, text) pairs; refuses (422) instead when text_overflow = refuse."""
    limit = settings.max_text_chars
    long = [field for field, text in texts if len(text) > limit]
    if long and settings.text_overflow == "refuse":
        raise RequestValidationError(
            [_problem(f, f"longer than {limit} characters (CAPPROF_MAX_TEXT_CHARS); shorten it") for f in long[:20]]
        )
    return [text[:limit] for _, text in texts], long


def check_counts(settings: Settings, messages: Sequence[int], prefix: Sequence[str]) -> None:
    """Messages per chat and texts per batch, before anything is embedded (422 naming the field)."""
    problems = [
        _problem(f"{p}messages", f"at most {settings.max_messages} messages per chat (got {n})")
        for p, n in zip(prefix, messages, strict=True)
        if n > settings.max_messages
    ]
    if problems:
        raise RequestValidationError(problems[:20])
    total = sum(max(n, 1) for n in messages)
    if len(messages) > 1 and total > settings.max_batch_texts:
        raise RequestValidationError(
            [
                _problem(
                    "requests", f"at most {settings.max_batch_texts} texts (queries + messages) per batch, got {total}"
                )
            ]
        )
