"""Request and response schemas: attrs classes are the one source for validation and for OpenAPI.

``field()`` declares a field once with its constraints; they become both an attrs validator
(so a parsed body is checked) and JSON Schema keywords (so the document says the same thing).
``parse(cls, data)`` structures a JSON body strictly (unknown keys refused) and turns cattrs'
and attrs' errors into one message naming the field; ``json_schema(tp, defs)`` renders a type
as JSON Schema 2020-12, the dialect of OpenAPI 3.1.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import types
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import attrs
import cattrs
from cattrs import transform_error
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from nexus.controlplane.api.errors import ApiError

T = TypeVar("T")

converter = cattrs.Converter(forbid_extra_keys=True)


def _structure_uuid(value: Any, _tp: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a UUID string")
    return uuid.UUID(value)


def _structure_datetime(value: Any, _tp: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise ValueError("expected an ISO 8601 date-time string")
    if parsed.tzinfo is None:
        raise ValueError("date-time needs a time zone offset")
    return parsed


_INT64 = 1 << 63


def _json_value(value: Any) -> Any:
    """Free-form JSON stored as jsonb must read back as the same JSON: bound numbers, no NUL."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        if not -_INT64 < value < _INT64 or value != value:
            raise ValueError("number out of range (64-bit)")
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        return value
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {_json_value(k): _json_value(v) for k, v in value.items()}
    raise ValueError("expected JSON")


def _structure_str(value: Any, _tp: Any) -> str:
    # cattrs would str() anything; an API must refuse 12 where text is expected.
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        return value
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    raise ValueError("expected a string")


def _structure_int(value: Any, _tp: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


def _structure_float(value: Any, _tp: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    return float(value)


def _structure_bool(value: Any, _tp: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _structure_any(value: Any, _tp: Any) -> Any:
    return _json_value(value)


converter.register_structure_hook(uuid.UUID, _structure_uuid)
converter.register_structure_hook(dt.datetime, _structure_datetime)
converter.register_structure_hook(str, _structure_str)
converter.register_structure_hook(int, _structure_int)
converter.register_structure_hook(float, _structure_float)
converter.register_structure_hook(bool, _structure_bool)
converter.register_structure_hook(Any, _structure_any)
converter.register_unstructure_hook(uuid.UUID, str)
converter.register_unstructure_hook(dt.datetime, lambda v: v.isoformat())


def _structure_dict(value: Any, tp: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected an object")
    args = get_args(tp)
    if len(args) == 2 and args[1] is not Any:
        return {_json_value(k): converter.structure(v, args[1]) for k, v in value.items()}
    return dict(_json_value(value))


def _structure_list(value: Any, tp: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError("expected an array")
    (item,) = get_args(tp) or (Any,)
    out: list[Any] = []
    errors: list[Exception] = []
    for index, element in enumerate(value):
        try:
            out.append(converter.structure(element, item))
        except Exception as exc:
            exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"index {index}", index, item)]
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"while structuring {tp!r}", errors, tp)
    return out


def _structure_literal(value: Any, tp: Any) -> Any:
    allowed = get_args(tp)
    if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed if a == value):
        raise ValueError("must be one of " + ", ".join(map(str, allowed)))
    return value


def _origin_is(origin: Any) -> Callable[[Any], bool]:
    return lambda tp: bool(get_origin(tp) is origin)


converter.register_structure_hook_func(_origin_is(dict), _structure_dict)
converter.register_structure_hook_func(_origin_is(list), _structure_list)
converter.register_structure_hook_func(_origin_is(Literal), _structure_literal)


def field(
    *,
    default: Any = attrs.NOTHING,
    factory: Callable[[], Any] | None = None,
    description: str = "",
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    minimum: int | float | None = None,
    maximum: int | float | None = None,
    fmt: str | None = None,
    read_only: bool = False,
) -> Any:
    """An attrs field whose constraints are checked on parse and published in the schema."""
    schema: dict[str, Any] = {}
    checks: list[Callable[[Any], str | None]] = []
    if description:
        schema["description"] = description
    if min_length is not None:
        schema["minLength"] = min_length
        checks.append(lambda v: None if len(v) >= min_length else f"must be at least {min_length} long")
    if max_length is not None:
        schema["maxLength"] = max_length
        checks.append(lambda v: None if len(v) <= max_length else f"must be at most {max_length} long")
    if pattern is not None:
        schema["pattern"] = pattern
        compiled = re.compile(pattern)
        checks.append(lambda v: None if compiled.search(v) else f"must match {pattern}")
    if minimum is not None:
        schema["minimum"] = minimum
        checks.append(lambda v: None if v >= minimum else f"must be >= {minimum}")
    if maximum is not None:
        schema["maximum"] = maximum
        checks.append(lambda v: None if v <= maximum else f"must be <= {maximum}")
    if fmt is not None:
        schema["format"] = fmt
    if read_only:
        schema["readOnly"] = True

    def validate(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        for check in checks:
            problem = check(value)
            if problem:
                raise ValueError(f"{attribute.name}: {problem}")

    kwargs: dict[str, Any] = {"metadata": {"schema": schema}}
    if checks:
        kwargs["validator"] = validate
    if factory is not None:
        kwargs["factory"] = factory
    elif default is not attrs.NOTHING:
        kwargs["default"] = default
    return attrs.field(**kwargs)


def patch_of(create: type, *fixed: str, doc: str) -> type:
    """A resource's update schema: its create schema without the fields fixed at creation.

    The fields keep their types, defaults and constraints, so the two schemas cannot drift apart.
    """
    kept = {a.name: attrs.field(default=a.default, validator=a.validator, metadata=a.metadata, type=a.type)
            for a in attrs.fields(attrs.resolve_types(create)) if a.name not in fixed}
    unknown = set(fixed) - {a.name for a in attrs.fields(create)}
    if unknown:
        raise TypeError(f"{create.__name__} has no fields {sorted(unknown)}")
    name = create.__name__.removesuffix("Create") + "Update"
    update = attrs.make_class(name, kept, frozen=True)
    update.__doc__, update.__module__ = doc, create.__module__
    return update


def _format(exc: BaseException, _tp: Any) -> str:
    if isinstance(exc, KeyError):
        return "is required"
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"{sorted(exc.extra_fields)[0]}: unknown field"
    return str(exc)


def _describe(exc: BaseException) -> tuple[str, str]:
    """(field path, problem) for the first error cattrs found, e.g. ("models[2].code", "is required")."""
    for line in transform_error(exc, path="$", format_exception=_format):
        problem, _, where = line.rpartition(" @ ")
        path = where.removeprefix("$").lstrip(".")
        # field() validators run in the class's __init__ and name their attribute themselves.
        head, sep, rest = problem.partition(": ")
        if sep and head.isidentifier():
            path, problem = (f"{path}.{head}" if path else head), rest
        return path or "body", problem
    return "body", str(exc)


def parse(cls: type[T], data: Any) -> T:
    """Structure a decoded JSON body into ``cls`` or raise a 422 that names the field."""
    if attrs.has(cls) and not isinstance(data, dict):
        raise ApiError(422, "validation_error", "body: expected a JSON object", {"field": "body"})
    try:
        return converter.structure(data, cls)
    except (ValueError, TypeError, KeyError, ClassValidationError, IterableValidationError) as exc:
        where, problem = _describe(exc)
        raise ApiError(422, "validation_error", f"{where}: {problem}", {"field": where}) from None


def parse_partial(cls: type[Any], data: Any) -> dict[str, Any]:
    """A PATCH body: any subset of ``cls``'s fields, each structured and checked like in ``parse``."""
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "body: expected a JSON object", {"field": "body"})
    fields = {a.name: a for a in attrs.fields(attrs.resolve_types(cls))}
    out: dict[str, Any] = {}
    for key, value in data.items():
        attribute = fields.get(key)
        if attribute is None:
            raise ApiError(422, "validation_error", f"{key}: unknown field", {"field": key})
        try:
            structured = converter.structure(value, attribute.type)
            if attribute.validator is not None and structured is not None:
                attribute.validator(None, attribute, structured)
        except (ValueError, TypeError, ClassValidationError, IterableValidationError) as exc:
            _, problem = _describe(exc)
            raise ApiError(422, "validation_error", f"{key}: {problem}", {"field": key}) from None
        out[key] = structured
    if not out:
        raise ApiError(422, "validation_error", "body: nothing to update", {"field": "body"})
    return out


def unstructure(value: Any) -> Any:
    return converter.unstructure(value)


# -- JSON Schema ------------------------------------------------------------------------------

_SCALARS: Mapping[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    uuid.UUID: {"type": "string", "format": "uuid"},
    dt.datetime: {"type": "string", "format": "date-time"},
    Any: {},
}


_schema_owners: dict[str, type] = {}


def json_schema(tp: Any, defs: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """JSON Schema for ``tp``; attrs classes go to ``defs`` (components/schemas) and are referenced."""
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        inner = (json_schema(members[0], defs) if len(members) == 1
                 else {"anyOf": [json_schema(a, defs) for a in members]})
        if type(None) in args:
            return {"anyOf": [inner, {"type": "null"}]}
        return inner
    if origin is list:
        return {"type": "array", "items": json_schema(args[0] if args else Any, defs)}
    if origin is dict:
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": json_schema(value, defs) if value is not Any else True}
    if attrs.has(tp):
        attrs.resolve_types(tp)
        name = tp.__name__ + ("Patch" if partial else "")
        owner = _schema_owners.setdefault(name, tp)
        if owner is not tp:
            raise TypeError(f"two schemas named {name}: {owner.__module__} and {tp.__module__}; rename one")
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            properties: dict[str, Any] = {}
            required: list[str] = []
            for attribute in attrs.fields(tp):
                prop = json_schema(attribute.type, defs)
                prop.update(attribute.metadata.get("schema", {}))
                properties[attribute.name] = prop
                if attribute.default is attrs.NOTHING and not partial:
                    required.append(attribute.name)
            schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
            if required:
                schema["required"] = required
            if partial:
                schema["minProperties"] = 1
            if tp.__doc__:
                schema["description"] = tp.__doc__.strip().splitlines()[0]
            defs[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}
    raise TypeError(f"no JSON Schema for {tp!r}")
