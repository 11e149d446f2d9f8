"""Prometheus metrics, one registry per app so several apps (tests) never collide."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.route_requests = Counter(
            "capprof_route_requests", "Route requests answered", ["endpoint", "status"], registry=self.registry
        )
        self.route_latency = Histogram(
            "capprof_route_latency_seconds",
            "Route latency inside the service",
            ["endpoint"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.chosen = Counter("capprof_route_chosen", "Decisions per chosen model", ["model"], registry=self.registry)
        self.decisions_dropped = Counter(
            "capprof_decisions_dropped",
            "Decisions dropped: the log queue was full, or the database refused the row",
            registry=self.registry,
        )
        self.decisions_pending = Gauge(
            "capprof_decisions_pending", "Decisions waiting to be written", registry=self.registry
        )
        # Issue 11: operating the service.
        self.auth_failures = Counter(
            "capprof_auth_failures",
            "Requests refused by authentication (missing, invalid or revoked key) or scope",
            ["reason"],
            registry=self.registry,
        )
        self.budget_refusals = Counter(
            "capprof_budget_refusals",
            "Route requests refused by a key's monthly budget",
            ["key"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "capprof_feedback", "Feedback received on routed decisions", ["model"], registry=self.registry
        )
        self.http_requests = Counter(
            "capprof_http_requests", "HTTP requests answered", ["method", "status"], registry=self.registry
        )
        self.decisions_purged = Counter(
            "capprof_decisions_purged",
            "Decisions whose query vector passed the retention window",
            registry=self.registry,
        )
        # Gateway (service/gateway/): upstreams that failed before their first byte, by model and reason.
        self.gateway_fallbacks = Counter(
            "capprof_gateway_upstream_failures",
            "Upstream attempts that failed before the first byte (the gateway moved on)",
            ["model", "reason"],
            registry=self.registry,
        )
