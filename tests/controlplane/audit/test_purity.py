"""The record, masking and chain modules are pure: importing them (and the package) loads no Trio or psycopg,
so tools can verify an exported log without the daemon's I/O machinery."""

from __future__ import annotations

import subprocess
import sys


def _loaded(imports: str) -> str:
    code = (f"import sys\n{imports}\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'psycopg', 'asyncio'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_pure_modules_load_no_trio() -> None:
    assert _loaded("import nexus.controlplane.audit\n"
                   "from nexus.controlplane.audit import chain, mask, record, AdminAuditEntry, mask_secrets") == ""


def test_the_shells_do_load_trio() -> None:
    # Guards the test above against passing because nothing is ever loaded.
    assert "trio" in _loaded("import nexus.controlplane.audit.log").split(",")
