"""The appliance's systemd units: ``systemd-analyze verify`` is silent and the hardening score holds."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "appliance" / "systemd"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (package systemd)")


def _staged(tmp_path: Path) -> list[Path]:
    # verify checks that ExecStart exists: point it at this checkout's nexus instead of /opt/nexus/venv.
    nexus = Path(sys.executable).parent / "nexus"
    staged = []
    for unit in sorted(UNITS.glob("*.s*")):
        text = unit.read_text().replace("/opt/nexus/venv/bin/nexus", str(nexus))
        target = tmp_path / unit.name
        target.write_text(text)
        staged.append(target)
    return staged


def test_units_exist() -> None:
    names = {p.name for p in UNITS.iterdir()}
    assert {"nexus-gateway.socket", "nexus-gateway.service"} <= names


def test_verify_prints_nothing(tmp_path: Path) -> None:
    units = _staged(tmp_path)
    out = subprocess.run([ANALYZE, "verify", *map(str, units)], capture_output=True, text=True, cwd=tmp_path)
    assert out.stderr == "", out.stderr
    assert out.returncode == 0


def test_services_score_at_most_2(tmp_path: Path) -> None:
    for unit in _staged(tmp_path):
        if unit.suffix != ".service":
            continue
        out = subprocess.run([ANALYZE, "security", "--offline=yes", str(unit)], capture_output=True, text=True)
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout + out.stderr)
        assert match, out.stdout + out.stderr
        assert float(match.group(1)) <= 2.0, f"{unit.name}: {match.group(1)}"


def test_service_and_socket_agree_on_fd_name() -> None:
    # The daemon looks up its socket by FileDescriptorName; a mismatch would silently bind from config.
    socket = (UNITS / "nexus-gateway.socket").read_text()
    assert "FileDescriptorName=http" in socket
    service = (UNITS / "nexus-gateway.service").read_text()
    assert "Type=notify" in service and "WatchdogSec=" in service and "NotifyAccess=main" in service
