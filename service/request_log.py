"""One structured JSON log line per HTTP request, with a request id that is taken from X-Request-ID or made.

The line holds the method, the path (no query string), the status, the latency and the caller (an API key's name, or
the self-declared label when anonymous). It never holds a key, a header or a request body, so no query text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from service.metrics import Metrics

ACCESS_LOGGER = "capprof.access"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # anything else is replaced, never echoed

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger(ACCESS_LOGGER)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            offered = value.decode("latin-1")
            if REQUEST_ID.match(offered):
                return offered
    return uuid.uuid4().hex


class RequestLogMiddleware:
    """Pure ASGI (no buffering of bodies); the caller is read from the request state the auth dependency sets."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_code = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            state = scope.get("state", {})
            self.metrics.http_requests.labels(scope["method"], str(status_code)).inc()
            logger.info(
                json.dumps(
                    {
                        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status_code,
                        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                        "caller": state.get("caller"),
                    },
                    separators=(",", ":"),
                )
            )


def configure_request_logging() -> None:
    """Request lines go to standard output as they are (already JSON); call once per process (`capprof serve`)."""
    if any(getattr(h, "_capprof", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._capprof = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
