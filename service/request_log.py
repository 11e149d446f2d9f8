"""One structured JSON log line per HTTP request, with its request id (service/api/request_id.py takes or makes it).

The line holds the method, the path (no query string), the status, the latency and the caller (an API key's name, or
the self-declared label when anonymous). It never holds a key, a header or a request body, so no query text.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.request_id import REQUEST_ID
from service.metrics import Metrics

ACCESS_LOGGER = "capprof.access"

logger = logging.getLogger(ACCESS_LOGGER)


class RequestLogMiddleware:
    """Pure ASGI (no buffering of bodies); the caller is read from the request state the auth dependency sets.

    It runs inside RequestIdMiddleware, which has set the request id and echoes it on the response."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = REQUEST_ID.get()
        started = time.perf_counter()
        status_code = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
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
