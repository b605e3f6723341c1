"""The routing core is pure: importing it (the package and every module but the two shells) loads no Trio and
no I/O machinery, so it can run in the control plane, in tests and in tools alike."""

from __future__ import annotations

import subprocess
import sys

PURE = ["attempts", "health", "planner", "predicate", "rules", "simulate", "strategies"]


def test_pure_modules_load_no_trio() -> None:
    code = (
        "import sys\nimport nexus.gateway.routing\n"
        + "".join(f"import nexus.gateway.routing.{m}\n" for m in PURE)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'psycopg', 'socket', 'ssl', 'asyncio'))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_the_shells_do_load_trio() -> None:
    # Guards the test above against passing because nothing is ever loaded.
    code = "import sys, nexus.gateway.routing.smart; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "True"
