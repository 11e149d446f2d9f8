"""Counts refused and failed route requests in /metrics (the handlers count only the answered ones).

A pure ASGI wrapper, so a 422 from the schema, a 503 with no model and a 500 are all seen, whatever raised them.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

ENDPOINTS = {"/v1/route": "route", "/v1/route/batch": "route_batch"}


class RouteErrorMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = ENDPOINTS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.metrics.route_requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            self.metrics.route_requests.labels(endpoint, "500").inc()
            raise
