"""One request id per request: the caller's X-Request-ID when it is sane, else a new one; echoed on every response.

Unhandled errors are logged with it, and the client gets only the id (never the exception text), so an operator
can find the traceback from what a user reports.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
HEADER = "X-Request-ID"
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def internal_error(request_id: str) -> JSONResponse:
    return JSONResponse(
        {
            "detail": f"internal error (request id {request_id}); nothing about it is shown here",
            "request_id": request_id,
        },
        status_code=500,
        headers={HEADER: request_id},
    )


class RequestIdMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): sets REQUEST_ID, echoes it, turns an escaped exception into a bare 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get(HEADER, "")
        request_id = offered if _SANE.match(offered) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                if HEADER not in headers:
                    headers.append(HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error, request id %s: %s %s", request_id, scope["method"], scope["path"])
            if started:
                raise
            await internal_error(request_id)(scope, receive, send)
        finally:
            REQUEST_ID.reset(token)
