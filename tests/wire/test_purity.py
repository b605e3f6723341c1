"""The wire package is pure: importing it loads no Trio and no I/O machinery."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "nexus.wire",
    "nexus.wire.canonical",
    "nexus.wire.rawjson",
    "nexus.wire.usage",
    "nexus.wire.errors",
    "nexus.wire.openai",
    "nexus.wire.responses",
    "nexus.wire.anthropic",
    "nexus.wire.gemini",
]


def test_imports_load_no_trio() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'httpx', 'socket', 'ssl', 'asyncio'))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
