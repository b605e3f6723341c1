"""Requests per second of nexus.net.http1 on one core.  Not a test.

Scenarios (each server process pinned to core 0, load and upstream on core 1):

  echo    HttpServer with a trivial handler, driven by wrk (if installed) and by HttpClient
          from another process (N tasks, keep-alive).
  proxy   HttpServer whose handler forwards each request through HttpClient to an upstream
          echo HttpServer: the shape of the gateway's hot path without its JSON work.

    .venv/bin/python bench/http1_echo.py [--seconds 5] [--tasks 32] [--body 1024]

Prints one line per figure and a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import trio

from nexus.net.http1.client import HttpClient
from nexus.net.http1.server import HttpServer
from nexus.net.http1.types import Request, Response

HOST = "127.0.0.1"
RESPONSE = b'{"id":"cmpl-1","object":"chat.completion","choices":[{"message":{"content":"ok"}}]}'


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def echo(req: Request) -> Response:
    return Response(200, [(b"content-type", b"application/json")], RESPONSE)


def serve(port: int, upstream: int | None) -> None:
    async def main() -> None:
        handler = echo
        client = HttpClient()
        if upstream is not None:
            url = f"http://{HOST}:{upstream}/v1/chat/completions"

            async def proxy(req: Request) -> Response:
                got = await client.request(req.method, url, [(b"content-type", b"application/json")], req.body)
                return Response(got.status, [(b"content-type", b"application/json")], got.body)

            handler = proxy
        listeners = await trio.open_tcp_listeners(port, host=HOST, backlog=1024)
        await HttpServer(handler).serve(listeners)

    trio.run(main)


def start_server(core: int, port: int, upstream: int | None = None) -> subprocess.Popen[bytes]:
    args = [sys.executable, __file__, "--serve", str(port), "--core", str(core)]
    if upstream is not None:
        args += ["--upstream", str(upstream)]
    proc = subprocess.Popen(args)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_wrk(port: int, seconds: float, conns: int, body: int) -> float | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    script = f'wrk.method = "POST"\nwrk.body = string.rep("x", {body})\n'
    path = f"/tmp/nexus-bench-{os.getpid()}.lua"
    with open(path, "w") as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                "taskset",
                "-c",
                "1",
                wrk,
                "-t1",
                f"-c{conns}",
                f"-d{int(seconds)}s",
                "-s",
                path,
                f"http://{HOST}:{port}/",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(path)
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def run_client_load(port: int, seconds: float, tasks: int, body: int) -> float:
    """Load from HttpClient in a child process pinned to core 1."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            str(port),
            "--core",
            "1",
            "--seconds",
            str(seconds),
            "--tasks",
            str(tasks),
            "--body",
            str(body),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def load(port: int, seconds: float, tasks: int, body: int) -> None:
    payload = b"x" * body
    url = f"http://{HOST}:{port}/v1/chat/completions"

    async def main() -> None:
        done = 0
        async with HttpClient() as client:
            deadline = trio.current_time() + seconds

            async def worker() -> None:
                nonlocal done
                while trio.current_time() < deadline:
                    got = await client.request("POST", url, [(b"content-type", b"application/json")], payload)
                    if got.status != 200:
                        raise RuntimeError(f"status {got.status}")
                    done += 1

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(worker)
            print(done / (trio.current_time() - start))

    trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=32, help="concurrent requests (wrk connections too)")
    parser.add_argument("--body", type=int, default=1024, help="request body bytes")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve is not None:
        pin(args.core)
        serve(args.serve, args.upstream)
        return
    if args.load is not None:
        pin(args.core)
        load(args.load, args.seconds, args.tasks, args.body)
        return

    results: dict[str, float | None] = {}
    port = free_port()
    server = start_server(0, port)
    try:
        results["echo_wrk"] = run_wrk(port, args.seconds, args.tasks, args.body)
        results["echo_httpclient"] = run_client_load(port, args.seconds, args.tasks, args.body)
    finally:
        stop(server)

    upstream_port, proxy_port = free_port(), free_port()
    upstream = start_server(1, upstream_port)
    proxy = start_server(0, proxy_port, upstream=upstream_port)
    try:
        results["proxy_wrk"] = run_wrk(proxy_port, args.seconds, args.tasks, args.body)
        results["proxy_httpclient"] = run_client_load(proxy_port, args.seconds, args.tasks, args.body)
    finally:
        stop(proxy)
        stop(upstream)

    for name, rate in results.items():
        print(f"{name:18} {'n/a (wrk not installed)' if rate is None else f'{rate:,.0f} req/s'}")
    print(json.dumps({"tasks": args.tasks, "body": args.body, "seconds": args.seconds, **results}))


if __name__ == "__main__":
    main()
