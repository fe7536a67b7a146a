"""The ``/metrics`` endpoint: a mountable ASGI app serving the Prometheus exposition."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.multiprocess import MultiProcessCollector

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.types import SCOPE_KEY, ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi_tenancy.observe.metrics import TenancyMetrics

__all__ = ["MetricsApp", "metrics_app"]

DISABLED_BODY = b"fastapi-tenancy metrics are disabled: set TENANCY_ENABLE_METRICS=true\n"


class _Runtime(Protocol):
    """What the app reads of a `Tenancy` (it never imports the runtime, which imports it)."""

    @property
    def metrics(self) -> TenancyMetrics | None: ...


class MetricsApp:
    """The ASGI app `metrics_app` returns (a class, so Starlette routes treat it as ASGI)."""

    def __init__(self, tenancy: _Runtime | None = None) -> None:
        self._tenancy = tenancy
        self._served: dict[int, ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self._tenancy if self._tenancy is not None else scope.get(SCOPE_KEY)
        if runtime is None:
            raise ConfigurationError(
                "metrics_app() found no tenancy runtime: mount it behind TenancyMiddleware (on a "
                "path in excluded_paths) or pass metrics_app(tenancy)"
            )
        metrics: TenancyMetrics | None = runtime.metrics
        if metrics is None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": DISABLED_BODY})
            return
        exposition = self._served.get(id(metrics))
        if exposition is None:
            exposition = self._served[id(metrics)] = make_asgi_app(_registry_of(metrics))
        await exposition(scope, receive, send)


def metrics_app(tenancy: _Runtime | None = None) -> MetricsApp:
    """An ASGI app that serves the runtime's metrics in the Prometheus text format.

    Route it on a path the middleware excludes, so scrapers need no tenant::

        config = TenancyConfig(enable_metrics=True, excluded_paths="/health/*,/metrics")
        app.add_middleware(TenancyMiddleware, config=config)
        app.mount("/metrics", metrics_app())  # serves /metrics/ (and redirects /metrics)

    or, for exactly ``/metrics``, ``app.routes.append(starlette.routing.Route("/metrics",
    metrics_app()))``. Without
    ``tenancy`` it serves the runtime of the `TenancyMiddleware` in front of it. With
    ``PROMETHEUS_MULTIPROC_DIR`` set it serves the sum over every worker process.
    """
    return MetricsApp(tenancy)


def _registry_of(metrics: TenancyMetrics) -> CollectorRegistry:
    if metrics.registry is not None:
        return metrics.registry
    # Multi-process mode: every scrape sums the value files of all workers, live or dead.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics.multiprocess_dir)  # type: ignore[no-untyped-call]
    return registry
