"""Load ``NexusConfig`` from a TOML file plus ``NEXUS_*`` environment overrides.

Precedence: schema defaults < TOML file < environment.  Environment variables
address any key as ``NEXUS_<SECTION>__<KEY>[__<SUBKEY>…]`` (double underscore
between levels, e.g. ``NEXUS_GATEWAY__LISTEN__PORT=3051``); a few common ones
have short aliases (``NEXUS_DATABASE_URL``…).  Values are read as TOML literals
when they parse as one (``3051``, ``true``, ``[1, 2]``) and as plain strings
otherwise.

Every problem becomes one ``ConfigError`` whose message is a single line naming
the source (file or variable) and the dotted key, so an operator reading
``journalctl`` knows what to fix.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError

from nexus.config.schema import NexusConfig

DEFAULT_PATH = Path("/etc/nexus/nexus.toml")
ENV_PREFIX = "NEXUS_"
ENV_ALIASES: Mapping[str, tuple[str, ...]] = {
    "NEXUS_DATABASE_URL": ("storage", "database_url"),
    "NEXUS_VALKEY_URL": ("storage", "valkey_url"),
    "NEXUS_NATS_URL": ("storage", "nats_url"),
    "NEXUS_LOG_LEVEL": ("log", "level"),
    "NEXUS_LOG_FORMAT": ("log", "format"),
    "NEXUS_STATE_DIR": ("runtime", "state_dir"),
    "NEXUS_SECRETS_DIR": ("secrets", "dir"),
}


class ConfigError(Exception):
    """Invalid configuration; ``str()`` is the one-line message for the operator."""


def _strict(kind: type, accept: tuple[type, ...]) -> typing.Callable[[Any, type], Any]:
    # cattrs would coerce "3050" to 3050 and 1 to True: a config typo must not pass silently.
    def hook(value: Any, _type: type) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got {value!r}")
        if not isinstance(value, accept):
            raise TypeError(f"expected {kind.__name__}, got {value!r}")
        return kind(value)

    return hook


def _converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(int, _strict(int, (int,)))
    conv.register_structure_hook(float, _strict(float, (int, float)))
    conv.register_structure_hook(str, _strict(str, (str,)))
    conv.register_structure_hook(bool, _strict(bool, (bool,)))
    return conv


CONVERTER = _converter()


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    """Map each overridden key path to (variable name, value)."""
    found: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name, raw in sorted(environ.items()):
        if name in ENV_ALIASES:
            found[ENV_ALIASES[name]] = (name, _parse_env_value(raw))
        elif name.startswith(ENV_PREFIX) and "__" in name:
            path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
            if any(not part for part in path):
                raise ConfigError(f"config error in environment {name}: empty key segment")
            found[path] = (name, _parse_env_value(raw))
    return found


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _message(exc: BaseException, note: AttributeValidationNote | None) -> str:
    if note is not None and typing.get_origin(note.type) is Literal:
        return f"expected one of {'|'.join(map(str, typing.get_args(note.type)))}"
    if note is not None and attrs.has(note.type):
        return "expected a table"
    if isinstance(exc, TypeError | ValueError) and str(exc):
        return str(exc)
    return f"invalid value ({exc.__class__.__name__}: {exc})"


def _walk(exc: BaseException, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield (*path, key), "unknown key"
    elif isinstance(exc, ClassValidationError):
        for sub in exc.exceptions:
            notes = [n for n in getattr(sub, "__notes__", []) if isinstance(n, AttributeValidationNote)]
            note = notes[0] if notes else None
            sub_path = (*path, note.name) if note is not None else path
            if isinstance(sub, ClassValidationError | ForbiddenExtraKeysError):
                yield from _walk(sub, sub_path)
            elif isinstance(sub, KeyError):
                yield (*path, str(sub.args[0])), "required key missing"
            else:
                yield sub_path, _message(sub, note)
    else:
        yield path, _message(exc, None)


def _validate(obj: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    # attrs validators run here, not inside cattrs, so that each error knows its full key path.
    for field in attrs.fields(type(obj)):
        value = getattr(obj, field.name)
        if field.validator is not None:
            try:
                field.validator(obj, field, value)
            except (TypeError, ValueError) as exc:
                yield (*path, field.name), str(exc).removeprefix(f"'{field.name}' ").removeprefix(f"{field.name}: ")
        if attrs.has(type(value)):
            yield from _validate(value, (*path, field.name))


def _with_value(message: str, path: tuple[str, ...], tree: Mapping[str, Any]) -> str:
    if not message.startswith(("expected one of", "expected a table")):
        return message
    node: Any = tree
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return f"{message}, got {node!r}"


def _source(path: tuple[str, ...], env: Mapping[tuple[str, ...], tuple[str, Any]], file: Path | None) -> str:
    for length in range(len(path), 0, -1):
        if path[:length] in env:
            return f"environment {env[path[:length]][0]}"
    # An unknown key introduced by a variable: the error path is a prefix of the variable's path.
    for env_path, (name, _value) in env.items():
        if env_path[: len(path)] == path:
            return f"environment {name}"
    return str(file) if file is not None else "defaults"


def resolve_path(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> tuple[Path | None, bool]:
    """The file to read and whether it must exist (explicit) or may be absent (the default location)."""
    if path is not None:
        return Path(path), True
    if environ.get("NEXUS_CONFIG"):
        return Path(environ["NEXUS_CONFIG"]), True
    return DEFAULT_PATH, False


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> NexusConfig:
    """Read, merge and validate; raise ``ConfigError`` with a one-line message naming source and key."""
    environ = os.environ if environ is None else environ
    file, required = resolve_path(path, environ)
    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if required:
                raise ConfigError(f"config error: file {file} not found") from None
            file = None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config error: cannot read {file}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config error in {file}: invalid TOML: {exc}") from None
    env = env_overrides(environ)
    for key_path, (_name, value) in env.items():
        _set_path(data, key_path, value)
    merged = _deep_merge(CONVERTER.unstructure(NexusConfig()), data)
    with attrs.validators.disabled():
        try:
            config = CONVERTER.structure(merged, NexusConfig)
        except ClassValidationError as exc:
            errors = list(_walk(exc, ()))
        else:
            errors = list(_validate(config, ()))
    if errors:
        errors = [(p, _with_value(msg, p, merged)) for p, msg in errors]
        raise ConfigError("; ".join(
            f"config error in {_source(p, env, file)}: {'.'.join(p)}: {msg}" for p, msg in errors
        ))
    return config
