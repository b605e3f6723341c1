"""Run one daemon: the nursery tree every Nexus daemon shares.

Order of events, each step a task started with ``nursery.start`` so the next
one begins only when the previous is running:

1. take the sockets systemd passed (or bind from config) — before anything
   else, so a port conflict fails fast;
2. start the watchdog pinger and the signal watcher;
3. start each dependency client (they return at once and reconnect by
   themselves, so a database that is down does not stop the daemon starting);
4. start each server (``/healthz`` answers from here on, ``/readyz`` says 503);
5. wait until every dependency is reachable, then start the background tasks
   and send ``READY=1``;
6. on SIGTERM or SIGINT: ``STOPPING=1``, stop accepting, drain in-flight
   requests up to ``runtime.drain_timeout``, cancel the rest, exit 0.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from nexus.runtime import activation, metrics
from nexus.runtime.dependency import DependencyState
from nexus.runtime.notify import Notifier

log = logging.getLogger("nexus.runtime")


class Dependency(Protocol):
    @property
    def state(self) -> DependencyState: ...

    async def run(self, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...

    async def wait_ready(self, timeout: float | None) -> bool: ...


class Server(Protocol):
    async def serve(
        self, listeners: Sequence[trio.SocketListener], *, task_status: trio.TaskStatus[Any] = ...
    ) -> None: ...

    def stop_accepting(self) -> None: ...

    async def drain(self, timeout: float) -> bool: ...


@attrs.define
class Endpoint:
    """One listening socket: the systemd ``FileDescriptorName=`` to look for, else host:port to bind."""

    fd_name: str
    host: str
    port: int
    server: Server


BackgroundTask = Callable[..., Awaitable[None]]


@attrs.define
class DaemonSpec:
    name: str
    endpoints: list[Endpoint]
    dependencies: list[Dependency] = attrs.field(factory=list)
    # Started after every dependency is up, each with ``nursery.start`` (so they take ``task_status``).
    background: list[BackgroundTask] = attrs.field(factory=list)
    drain_timeout: float = 25.0
    version: str = "0.1.0"


@attrs.define
class Control:
    """Handle on a running daemon: tests and the CLI use it to stop it or learn its ports."""

    stop_requested: trio.Event = attrs.field(factory=trio.Event)
    ready: trio.Event = attrs.field(factory=trio.Event)
    draining: bool = False
    addresses: dict[str, str] = attrs.field(factory=dict)

    def stop(self) -> None:
        self.stop_requested.set()


def _listeners(spec: DaemonSpec, environ: MutableMapping[str, str]) -> list[socket.socket]:
    inherited = activation.take_inherited(environ)
    socks: list[socket.socket] = []
    try:
        for ep in spec.endpoints:
            socks.append(activation.listener_for(
                inherited, ep.fd_name, ep.host, ep.port, only_one=len(spec.endpoints) == 1
            ))
    except OSError:
        for sock in socks:
            sock.close()
        inherited.close_unused()
        raise
    unused = inherited.close_unused()
    if unused:
        log.warning("closed inherited sockets nobody asked for: %s", ", ".join(unused))
    return socks


async def _watch_signals(control: Control, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            control.stop()


async def _wait_dependencies(spec: DaemonSpec, notifier: Notifier) -> None:
    while True:
        down = [d.state for d in spec.dependencies if not d.state.ok]
        if not down:
            return
        notifier.status("waiting for " + ", ".join(f"{s.name} ({s.detail})" for s in down))
        log.info("waiting for dependencies", extra={"waiting_for": {s.name: s.detail for s in down}})
        with trio.move_on_after(5):
            for dep in spec.dependencies:
                await dep.wait_ready(None)


async def serve_daemon(
    spec: DaemonSpec,
    *,
    environ: MutableMapping[str, str] | None = None,
    control: Control | None = None,
    task_status: trio.TaskStatus[Control] = trio.TASK_STATUS_IGNORED,
) -> None:
    env = os.environ if environ is None else environ
    control = control or Control()
    notifier = Notifier(env)
    metrics.BUILD_INFO.labels(spec.version, spec.name).set(1)
    socks = _listeners(spec, env)
    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_signals, control)
        await nursery.start(notifier.watchdog)
        for dep in spec.dependencies:
            await nursery.start(dep.run)
        for ep, sock in zip(spec.endpoints, socks, strict=True):
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            control.addresses[ep.fd_name] = activation.describe(sock)
            await nursery.start(ep.server.serve, [listener])
        log.info("listening", extra={"addresses": control.addresses})
        task_status.started(control)

        async def become_ready() -> None:
            await _wait_dependencies(spec, notifier)
            for task in spec.background:
                await nursery.start(task)
            notifier.ready(f"serving on {', '.join(control.addresses.values())}")
            control.ready.set()
            log.info("ready")

        nursery.start_soon(become_ready)
        await control.stop_requested.wait()
        control.draining = True
        notifier.stopping()
        for ep in spec.endpoints:
            ep.server.stop_accepting()
        results: dict[str, bool] = {}

        async def drain(ep: Endpoint) -> None:
            results[ep.fd_name] = await ep.server.drain(spec.drain_timeout)

        async with trio.open_nursery() as drainers:
            for ep in spec.endpoints:
                drainers.start_soon(drain, ep)
        if not all(results.values()):
            log.warning("drain deadline passed with requests still in flight", extra={"drained": results})
        nursery.cancel_scope.cancel()
    log.info("stopped")


def run(spec: DaemonSpec, control: Control | None = None) -> int:
    """Blocking entry point for ``nexus <daemon>``: returns the process exit code."""
    try:
        trio.run(functools.partial(serve_daemon, spec, control=control))
    except OSError as exc:
        log.error("cannot start %s: %s", spec.name, exc)
        return 1
    return 0
