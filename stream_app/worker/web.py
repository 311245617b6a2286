"""The worker's HTTP server: ``/metrics``, ``/health`` and ``/ready``; any other path is 404.

Registered with Faust's ``App.web_server``, it replaces Faust's own web stack, so none of
Faust's default pages (``/``, ``/router/``, ``/table/``, statistics, graph) is served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from mode import Service

from stream_app.worker.readiness import Failing


class WorkerWeb(Service):
    """Serves the three pages on ``host:port`` while the service runs.

    ``metrics`` renders the Prometheus text (of type ``metrics_type``), ``alive`` tells
    whether the worker has not crashed, ``failing`` names the readiness checks that fail.
    """

    def __init__(
        self,
        host: str,
        port: int,
        namespace: str,
        *,
        metrics: Callable[[], bytes],
        metrics_type: str,
        alive: Callable[[], bool],
        failing: Callable[[], Awaitable[Failing]],
        **kwargs: Any,
    ) -> None:
        self._host, self._port, self._namespace = host, port, namespace
        self._metrics, self._metrics_type = metrics, metrics_type
        self._alive, self._failing = alive, failing
        self._runner: web.AppRunner | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        """Bind ``host:port`` and serve."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/health", self._health_page)
        app.router.add_get("/ready", self._ready_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def on_stop(self) -> None:
        """Close the listening socket and open connections."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics_page(self, request: web.Request) -> web.Response:
        # aiohttp refuses a charset in content_type=: pass the header as such
        return web.Response(body=self._metrics(), headers={"Content-Type": self._metrics_type})

    async def _health_page(self, request: web.Request) -> web.Response:
        """Liveness: 200 while the event loop answers and the worker has not crashed."""
        alive = self._alive()
        body = {"status": "ok" if alive else "failed", "namespace": self._namespace}
        return web.json_response(body, status=200 if alive else 503)

    async def _ready_page(self, request: web.Request) -> web.Response:
        """Readiness: 200 while every check passes, else 503 naming the failing ones."""
        failing = await self._failing()
        body = {
            "status": "not ready" if failing else "ready",
            "failing": failing,
            "namespace": self._namespace,
        }
        return web.json_response(body, status=503 if failing else 200)
