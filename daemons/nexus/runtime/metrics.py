"""Prometheus metrics: one registry per process, shared by every part of a daemon.

Metric objects are created at import time of the module that owns them, on
``REGISTRY``; ``render()`` produces the text exposition for ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

BUILD_INFO = Gauge("nexus_build_info", "Nexus version and daemon", ["version", "daemon"], registry=REGISTRY)
UP = Gauge("nexus_dependency_up", "1 when the dependency is reachable", ["dependency"], registry=REGISTRY)
HTTP_REQUESTS = Counter(
    "nexus_http_requests", "HTTP requests answered", ["daemon", "route", "status"], registry=REGISTRY
)
HTTP_INFLIGHT = Gauge("nexus_http_inflight", "HTTP requests in flight", ["daemon"], registry=REGISTRY)
HTTP_LATENCY = Histogram(
    "nexus_http_request_seconds", "Time to answer, head to last byte", ["daemon", "route"], registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def render() -> bytes:
    return generate_latest(REGISTRY)
