"""Requests per second of the mock provider on one core.  Not a test.

The mock (``nexus.mock.app.make_handler`` on ``HttpServer``) runs in a child process
pinned to core 0 with request recording off; the load comes from another process pinned
to core 1: wrk with a Lua script for the POST body when wrk is installed, else our
HttpClient with N keep-alive tasks.  Scenarios, each a realistic small request:

  openai_chat        POST /v1/chat/completions, non-stream (the headline figure)
  anthropic_messages POST /v1/messages, non-stream
  gemini_generate    POST /v1beta/models/…:generateContent
  openai_chat_stream POST /v1/chat/completions with stream=true (5 chunks, one write)
  openai_chat_rec    as openai_chat, with request recording on (the default config)

    .venv/bin/python bench/mock_provider.py [--seconds 5] [--conns 50] [--only openai_chat]

Prints one line per scenario and a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import trio

from nexus.config.schema import MockProviderConfig
from nexus.mock.app import make_handler
from nexus.net.http1.client import HttpClient
from nexus.net.http1.server import HttpServer

HOST = "127.0.0.1"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Summarise the plot of Hamlet in two sentences, please."},
]
SCENARIOS: dict[str, tuple[str, dict[str, object]]] = {
    "openai_chat": ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 200}),
    "anthropic_messages": (
        "/v1/messages",
        {"model": "claude-test", "max_tokens": 200, "system": MESSAGES[0]["content"], "messages": MESSAGES[1:]},
    ),
    "gemini_generate": (
        "/v1beta/models/gemini-2.5-flash:generateContent",
        {"contents": [{"role": "user", "parts": [{"text": MESSAGES[1]["content"]}]}]},
    ),
    "openai_chat_stream": (
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
    ),
    "openai_chat_rec": ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 200}),
}


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def serve(port: int, record: bool) -> None:
    async def main() -> None:
        handler = make_handler(MockProviderConfig(record_requests=record))
        listeners = await trio.open_tcp_listeners(port, host=HOST, backlog=1024)
        await HttpServer(handler).serve(listeners)

    trio.run(main)


def start_server(port: int, record: bool) -> subprocess.Popen[bytes]:
    args = [sys.executable, __file__, "--serve", str(port), "--core", "0"]
    if record:
        args.append("--record")
    proc = subprocess.Popen(args)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mock provider did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def run_wrk(port: int, path: str, body: bytes, seconds: float, conns: int) -> float | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    script = (
        'wrk.method = "POST"\n'
        f"wrk.body = {_lua_string(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        "function response(status, headers, body)\n"
        '  if status ~= 200 then error("status " .. status) end\n'
        "end\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        argv = [wrk, "-t1", f"-c{conns}", f"-d{int(seconds)}s", "-s", f.name, f"http://{HOST}:{port}{path}"]
        if shutil.which("taskset"):
            argv = ["taskset", "-c", "1", *argv]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw error answers:\n{out}")
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def run_client_load(port: int, path: str, body: bytes, seconds: float, tasks: int) -> float:
    """Load from HttpClient in a child process pinned to core 1."""
    args = [sys.executable, __file__, "--load", str(port), "--core", "1", "--seconds", str(seconds)]
    args += ["--conns", str(tasks), "--path", path, "--body", body.decode()]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def load(port: int, path: str, body: bytes, seconds: float, tasks: int) -> None:
    url = f"http://{HOST}:{port}{path}"
    headers = [(b"content-type", b"application/json")]

    async def main() -> None:
        done = 0
        async with HttpClient() as client:
            deadline = trio.current_time() + seconds

            async def worker() -> None:
                nonlocal done
                while trio.current_time() < deadline:
                    got = await client.request("POST", url, headers, body)
                    if got.status != 200:
                        raise RuntimeError(f"status {got.status}: {got.body[:200]!r}")
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
    parser.add_argument("--conns", type=int, default=50, help="wrk connections / HttpClient tasks")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run only these scenarios")
    parser.add_argument("--client", action="store_true", help="drive with HttpClient even when wrk is installed")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--record", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve is not None:
        pin(args.core)
        serve(args.serve, args.record)
        return
    if args.load is not None:
        pin(args.core)
        load(args.load, args.path, args.body.encode(), args.seconds, args.conns)
        return

    results: dict[str, float | None] = {}
    driver = "httpclient" if args.client or shutil.which("wrk") is None else "wrk"
    for name in args.only or list(SCENARIOS):
        path, payload = SCENARIOS[name]
        body = json.dumps(payload).encode()
        port = free_port()
        server = start_server(port, record=name.endswith("_rec"))
        try:
            if driver == "wrk":
                results[name] = run_wrk(port, path, body, args.seconds, args.conns)
            else:
                results[name] = run_client_load(port, path, body, args.seconds, args.conns)
        finally:
            stop(server)
        rate = results[name]
        print(f"{name:20} {'n/a' if rate is None else f'{rate:,.0f} req/s'}", flush=True)
    print(json.dumps({"driver": driver, "conns": args.conns, "seconds": args.seconds, **results}))


if __name__ == "__main__":
    main()
