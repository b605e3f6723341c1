"""Two real gateway processes reserve against one budget: the last unit is granted once, whoever asks."""

from __future__ import annotations

import sys

import redis
import trio

from .conftest import uid

WORKER = r"""
import sys

import trio

from nexus.gateway.quota.engine import QuotaEngine, QuotaExceeded
from nexus.gateway.quota.policy import Estimate, QuotaPolicy, QuotaSnapshot, QuotaSubject
from nexus.net.resp.client import ValkeyClient

url, prefix, policy_id, key_id, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])


async def main():
    policy = QuotaPolicy(id=policy_id, name="shared", axis="virtual_key", unit="requests", window_kind="calendar",
                         calendar_period="day", subject=key_id, hard_limit=50)
    subject = QuotaSubject(key_id, None)
    granted = 0
    async with ValkeyClient(url, pool_size=16) as valkey:
        engine = QuotaEngine(valkey, write_behind=False, snapshot=QuotaSnapshot((policy,)), prefix=prefix)
        await valkey.execute("INCR", prefix + "ready")
        with trio.fail_after(30):
            while await valkey.execute("GET", prefix + "go") is None:
                await trio.sleep(0.002)

        async def one():
            nonlocal granted
            try:
                await engine.reserve(subject, Estimate(1, 1))
            except QuotaExceeded:
                return
            granted += 1

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    print(granted)


trio.run(main)
"""


async def test_two_processes_share_one_budget(valkey_url: str, prefix: str, checker: redis.Redis) -> None:
    policy_id, key_id = uid(), uid()
    granted: list[int] = []

    async def worker() -> None:
        proc = await trio.run_process(
            [sys.executable, "-c", WORKER, valkey_url, prefix, policy_id, key_id, "100"],
            capture_stdout=True, capture_stderr=True, check=False)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        granted.append(int(proc.stdout))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            nursery.start_soon(worker)
            for _ in range(3000):
                if int(checker.get(prefix + "ready") or 0) == 2:
                    break
                await trio.sleep(0.01)
            checker.set(prefix + "go", 1)
    assert len(granted) == 2 and sum(granted) == 50
    [key] = checker.scan_iter(match=f"{prefix}c:{policy_id}:*")
    assert checker.get(key) == b"50"
