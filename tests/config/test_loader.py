"""Config loading: each class of error is one line naming the source and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nexus.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nexus.toml"
    path.write_text(text)
    return path


def error_of(path: Path | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_without_file() -> None:
    config = load_config(None, {})
    assert config.gateway.listen.port == 3050
    assert config.storage.database_url == "postgresql://127.0.0.1:5432/nexus"
    assert config.storage.valkey_url == "redis://127.0.0.1:6379/0"
    assert config.storage.nats_url == "nats://127.0.0.1:4222"
    assert (config.hub.listen.port, config.control_plane.listen.port, config.mock_provider.listen.port) == (
        3060, 3001, 3062)


def test_file_and_env_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway.listen]\nport = 4000\n[log]\nlevel = "debug"\n')
    config = load_config(path, {"NEXUS_GATEWAY__LISTEN__PORT": "4001", "NEXUS_DATABASE_URL": "postgresql://db/x"})
    assert config.gateway.listen.port == 4001
    assert config.gateway.listen.host == "0.0.0.0"  # a partial section keeps the other defaults
    assert config.log.level == "debug"
    assert config.storage.database_url == "postgresql://db/x"


def test_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[gateway.listen]\nprot = 3050\n")
    assert error_of(path) == f"config error in {path}: gateway.listen.prot: unknown key"


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[gatway]\nport = 1\n")
    assert error_of(path) == f"config error in {path}: gatway: unknown key"


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway.listen]\nport = "3050"\n')
    assert error_of(path) == f"config error in {path}: gateway.listen.port: expected int, got '3050'"


def test_out_of_range_value(tmp_path: Path) -> None:
    path = write(tmp_path, "[gateway.listen]\nport = 70000\n")
    assert error_of(path) == f"config error in {path}: gateway.listen.port: must be <= 65535: 70000"


def test_bad_enum_value(tmp_path: Path) -> None:
    path = write(tmp_path, '[log]\nlevel = "loud"\n')
    assert error_of(path) == (
        f"config error in {path}: log.level: expected one of debug|info|warning|error, got 'loud'"
    )


def test_bad_url(tmp_path: Path) -> None:
    path = write(tmp_path, '[storage]\nvalkey_url = "http://x"\n')
    assert "storage.valkey_url: expected a redis|rediss|valkey:// URL" in error_of(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert error_of(path) == f"config error: file {path} not found"


def test_missing_default_file_is_fine() -> None:
    load_config(None, {})


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[gateway\nport = 1\n")
    assert error_of(path).startswith(f"config error in {path}: invalid TOML: ")


def test_bad_env_value() -> None:
    assert error_of(None, {"NEXUS_GATEWAY__LISTEN__PORT": "abc"}) == (
        "config error in environment NEXUS_GATEWAY__LISTEN__PORT: gateway.listen.port: expected int, got 'abc'"
    )


def test_bad_env_alias_value() -> None:
    assert error_of(None, {"NEXUS_NATS_URL": "redis://x:1"}).startswith(
        "config error in environment NEXUS_NATS_URL: storage.nats_url: expected a nats|tls:// URL"
    )


def test_unknown_env_key() -> None:
    assert error_of(None, {"NEXUS_GATEWAY__LISTN__PORT": "1"}) == (
        "config error in environment NEXUS_GATEWAY__LISTN__PORT: gateway.listn: unknown key"
    )


def test_nexus_config_env_names_the_file(tmp_path: Path) -> None:
    assert error_of(None, {"NEXUS_CONFIG": str(tmp_path / "x.toml")}) == (
        f"config error: file {tmp_path / 'x.toml'} not found"
    )


def test_cli_config_check(tmp_path: Path) -> None:
    good = write(tmp_path, "[gateway.listen]\nport = 3051\n")
    ok = subprocess.run([sys.executable, "-m", "nexus", "config", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[hub]\nlisten = 5\n")
    out = subprocess.run([sys.executable, "-m", "nexus", "config", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr == f"config error in {bad}: hub.listen: expected a table, got 5\n"


def test_daemon_refuses_bad_config_with_one_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "[gateway]\nlisten_port = 1\n")
    out = subprocess.run([sys.executable, "-m", "nexus", "gateway", "--config", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr == f"config error in {bad}: gateway.listen_port: unknown key\n"
