"""Prometheus metrics of the service, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..result import RewriteResult

STAGES = ("decode", "tagger", "ocr_det", "ocr_rec", "tokenise", "encoder", "render", "total")
_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Verdicts by endpoint/action/category/source, errors by code, latency per stage."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vlmguard_verdicts", "Guard verdicts by endpoint, action (pass, rewrite, monitor, "
            "block), category and source", ["endpoint", "action", "category", "source"],
            registry=r)
        self.errors = Counter("vlmguard_errors", "Requests answered with an error, by code",
                              ["endpoint", "code"], registry=r)
        self.stage = Histogram("vlmguard_stage_seconds", "Time in each guard stage",
                               ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.http = Histogram("vlmguard_http_request_seconds", "Request time, end to end",
                              ["endpoint"], buckets=_STAGE_BUCKETS, registry=r)
        self.upstream = Counter("vlmguard_upstream_responses", "Upstream answers by status",
                                ["status"], registry=r)
        self.pending = Gauge("vlmguard_pending_checks", "Guard checks queued or running",
                             registry=r)
        self.providers = Gauge("vlmguard_provider_info", "Execution providers that really run "
                               "each model (1 = in use)", ["model", "provider"], registry=r)

    def observe(self, endpoint: str, result: RewriteResult, action: str | None = None) -> None:
        self.requests.labels(endpoint, action or result.action, result.category,
                             result.source).inc()
        for stage, ms in result.timings_ms.items():
            if stage in STAGES:
                self.stage.labels(stage).observe(ms / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
