"""Make a plausible JSON value that validates against a JSON schema.

The mock provider answers tool calls and structured-output requests with values
generated here: the required properties of an object (every property when none
is required), typed values with hints taken from the property name
(``city`` → ``"Paris"``), the first ``enum``/``const`` value, the first
non-null ``anyOf``/``oneOf`` branch, and bounds (``minimum``, ``minLength``,
``minItems``…) respected.  Local ``$ref`` (``#/$defs/…``, ``#/definitions/…``)
is followed; deep in a recursive schema arrays shrink to their minimum and
unions take their null branch, and a hard depth limit stops the rest.  Type
names are matched case-insensitively because Gemini's OpenAPI subset spells
them ``OBJECT``, ``STRING``…

Pure and synchronous; raises nothing for schemas it does not understand (it
falls back to a string).
"""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 12
# Past this depth arrays get their minimum length and unions their null branch, so a
# recursive schema (a tree of itself) ends with the smallest valid value.
_SHALLOW_DEPTH = 4

_FORMATS = {
    "date-time": "2024-05-01T12:00:00Z",
    "date": "2024-05-01",
    "time": "12:00:00",
    "email": "alice@example.com",
    "idn-email": "alice@example.com",
    "uri": "https://example.com/resource",
    "url": "https://example.com/resource",
    "iri": "https://example.com/resource",
    "uri-reference": "/resource",
    "hostname": "example.com",
    "ipv4": "192.0.2.10",
    "ipv6": "2001:db8::10",
    "uuid": "123e4567-e89b-42d3-a456-426614174000",
    "duration": "PT1H",
}

# Property-name hints, matched as substrings of the lowercased name in this order.
_STRING_HINTS = (
    ("city", "Paris"),
    ("location", "Paris, France"),
    ("country", "France"),
    ("email", "alice@example.com"),
    ("url", "https://example.com"),
    ("unit", "celsius"),
    ("lang", "en"),
    ("currency", "EUR"),
    ("date", "2024-05-01"),
    ("time", "12:00:00"),
    ("phone", "+33 1 23 45 67 89"),
    ("address", "1 Rue de Rivoli, Paris"),
    ("title", "Quarterly report"),
    ("name", "Alice"),
    ("query", "weather in Paris"),
    ("id", "item-1"),
    ("description", "A short description"),
    ("color", "blue"),
)

_NUMBER_HINTS = (
    ("year", 2024),
    ("age", 30),
    ("count", 3),
    ("num", 3),
    ("quantity", 3),
    ("size", 3),
    ("limit", 3),
    ("days", 3),
    ("price", 20),
)


def generate(schema: Any, root: Any = None) -> Any:
    """A value valid against ``schema`` (a dict, or ``True``/``False`` schema)."""
    return _gen(schema, schema if root is None else root, "", 0)


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        names = [str(k).lower() for k in kind]
        non_null = [k for k in names if k != "null"]
        return non_null[0] if non_null else "null"
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _resolve(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return {}
    return node


def _gen(schema: Any, root: Any, name: str, depth: int) -> Any:
    if schema is True or not isinstance(schema, dict):
        return _string({}, name)
    if depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _gen(_resolve(ref, root), root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            nulls = [b for b in branches if isinstance(b, dict) and b.get("type") == "null"]
            if depth >= _SHALLOW_DEPTH and nulls:
                chosen = nulls[0]
            else:
                chosen = next((b for b in branches if not any(b is n for n in nulls)), branches[0])
            return _gen(chosen, root, name, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in all_of:
            if isinstance(part, dict) and isinstance(part.get("$ref"), str):
                part = _resolve(part["$ref"], root)
            if isinstance(part, dict):
                _merge(merged, part)
        return _gen(merged, root, name, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        return _array(schema, root, name, depth)
    if kind == "integer":
        return _number(schema, name, integer=True)
    if kind == "number":
        return _number(schema, name, integer=False)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, name)


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if key == "properties" and isinstance(value, dict):
            into.setdefault("properties", {}).update(value)
        elif key == "required" and isinstance(value, list):
            into["required"] = [*into.get("required", []), *value]
        else:
            into.setdefault(key, value)


def _object(schema: dict[str, Any], root: Any, depth: int) -> dict[str, Any]:
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) and required else list(props)
    return {n: _gen(props.get(n, {}), root, n, depth + 1) for n in names}


def _array(schema: dict[str, Any], root: Any, name: str, depth: int) -> list[Any]:
    lo = schema.get("minItems", 0)
    hi = schema.get("maxItems")
    prefix = schema.get("prefixItems")
    lo = lo if isinstance(lo, int) else 0
    count = max(lo, 1) if depth < _SHALLOW_DEPTH else lo
    if isinstance(hi, int):
        count = min(count, hi)
    items = schema.get("items", {})
    singular = name[:-1] if name.endswith("s") else name
    out: list[Any] = []
    for i in range(count):
        sub = prefix[i] if isinstance(prefix, list) and i < len(prefix) else items
        value = _gen(sub, root, singular, depth + 1)
        if schema.get("uniqueItems") and value in out:
            value = _distinct(sub, value, i)
        out.append(value)
    return out


def _distinct(schema: Any, value: Any, i: int) -> Any:
    # Only enums, strings and numbers are varied; other duplicates are rare enough in tool schemas.
    enum = schema.get("enum") if isinstance(schema, dict) else None
    if isinstance(enum, list) and i < len(enum):
        return enum[i]
    if isinstance(value, str):
        return f"{value} {i + 1}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value + i
    return value


def _number(schema: dict[str, Any], name: str, *, integer: bool) -> int | float:
    lname = name.lower()
    value: float = next((hint for key, hint in _NUMBER_HINTS if key in lname), 42)
    if not integer:
        value += 0.5
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = 1 if integer else 0.5
    if isinstance(xlo, int | float) and not isinstance(xlo, bool) and value <= xlo:
        value = xlo + step
    if isinstance(lo, int | float) and not isinstance(lo, bool) and value < lo:
        value = lo
    if isinstance(xhi, int | float) and not isinstance(xhi, bool) and value >= xhi:
        value = xhi - step
    if isinstance(hi, int | float) and not isinstance(hi, bool) and value > hi:
        value = hi
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and not isinstance(multiple, bool) and multiple > 0:
        value = (value // multiple) * multiple
        if isinstance(lo, int | float) and value < lo:
            value += multiple
    if integer:
        return int(value)
    return float(value)


def _string(schema: dict[str, Any], name: str) -> str:
    fmt = schema.get("format")
    value = _FORMATS.get(fmt) if isinstance(fmt, str) else None
    if value is None:
        lname = name.lower()
        value = next((hint for key, hint in _STRING_HINTS if key in lname), None)
        if value is None:
            value = f"example {name}" if name else "example"
    lo, hi = schema.get("minLength"), schema.get("maxLength")
    if isinstance(lo, int) and len(value) < lo:
        value = value + "x" * (lo - len(value))
    if isinstance(hi, int) and len(value) > hi:
        value = value[:hi]
    return value
