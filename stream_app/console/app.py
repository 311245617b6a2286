"""Run the console: :func:`running_console` starts it in the current event loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from stream_app.console.auth import Analysts, Sessions
from stream_app.console.service import Console
from stream_app.console.web import console_app
from stream_app.errors import ConfigError
from stream_app.settings import Settings


@dataclass(frozen=True)
class RunningConsole:
    """A console serving on :attr:`url`."""

    console: Console
    analysts: Analysts
    url: str


@contextlib.asynccontextmanager
async def running_console(settings: Settings) -> AsyncIterator[RunningConsole]:
    """Start the console of ``settings`` (its feeds, producer, HTTP server on
    ``console_host:console_port``, port 0 = any free one); stop it when the block ends."""
    analysts = Analysts.parse(settings.console_tokens)
    console = Console(settings)
    await console.start()
    runner = web.AppRunner(console_app(console, analysts, Sessions()), access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.console_host, settings.console_port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"the console cannot listen on {settings.console_host}:"
                f"{settings.console_port} ({exc.strerror}); set FRAUDSTREAM_CONSOLE_PORT to a "
                "free port (or FRAUDSTREAM_CONSOLE_HOST)"
            ) from None
        host, port = runner.addresses[0][:2]
        yield RunningConsole(console, analysts, f"http://{host}:{port}/")
    finally:
        await runner.cleanup()
        await console.stop()
