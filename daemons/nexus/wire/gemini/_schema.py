"""JSON Schema ⇄ Gemini ``Schema`` (the OpenAPI subset ``responseSchema`` and function parameters take).

Pure, never raises.  Gemini rejects keys outside its subset (``$schema``,
``additionalProperties``, ``$ref``/``$defs``, ``const``, ``allOf``,
``exclusiveMinimum``, unknown ``format`` values, ...) and type lists.
:func:`clean_schema` therefore keeps only the supported keys, inlines local
``$ref`` (a recursive one is cut to ``{"type": "object"}`` past a depth),
turns ``["T", "null"]`` and ``anyOf`` with a null branch into ``nullable``,
``const`` into a one-value ``enum``, merges ``allOf``, drops non-string enums
and empty ``properties``.  :func:`schema_from_gemini` goes back: lowercase
types, ``nullable`` as a ``"null"`` type.
"""

from __future__ import annotations

from typing import Any, Final

Obj = dict[str, Any]

_COPY: Final = (
    "title",
    "description",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "minProperties",
    "maxProperties",
    "propertyOrdering",
)
_FORMATS: Final = {
    "string": frozenset({"enum", "date-time"}),
    "integer": frozenset({"int32", "int64"}),
    "number": frozenset({"float", "double"}),
}
_MAX_DEPTH: Final = 8


def clean_schema(schema: Any) -> Obj:
    """A JSON Schema as a Gemini ``Schema``."""
    if not isinstance(schema, dict):
        return {}
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    return _clean(schema, defs, 0)


def _merge_all_of(schema: Obj) -> Obj:
    merged: Obj = {k: v for k, v in schema.items() if k != "allOf"}
    props: Obj = dict(merged.get("properties") or {})
    required: list[str] = list(merged.get("required") or [])
    for sub in schema.get("allOf") or ():
        if not isinstance(sub, dict):
            continue
        for k, v in sub.items():
            if k == "properties":
                props.update(v or {})
            elif k == "required":
                required.extend(r for r in v or () if r not in required)
            else:
                merged.setdefault(k, v)
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged


def _clean(schema: Obj, defs: Obj, depth: int) -> Obj:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if not isinstance(target, dict) or depth >= _MAX_DEPTH:
            return {"type": "object"}
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return _clean({**target, **siblings}, defs, depth + 1)
    if "allOf" in schema:
        schema = _merge_all_of(schema)
    out: Obj = {}
    nullable = schema.get("nullable") is True
    t = schema.get("type")
    if isinstance(t, list):
        types = [x for x in t if x != "null"]
        nullable = nullable or len(types) < len(t)
        if len(types) > 1:
            out["anyOf"] = [_clean({**schema, "type": x}, defs, depth + 1) for x in types]
            t = None
        else:
            t = types[0] if types else None
    variants = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(variants, list):
        real = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
        nullable = nullable or len(real) < len(variants)
        if len(real) == 1 and isinstance(real[0], dict):
            inner = _clean(real[0], defs, depth + 1)
            inner.update({k: schema[k] for k in ("title", "description") if k in schema})
            if nullable:
                inner["nullable"] = True
            return inner
        if real:
            out["anyOf"] = [_clean(v, defs, depth + 1) for v in real if isinstance(v, dict)]
    if "const" in schema:
        const = schema["const"]
        if isinstance(const, str):
            out["enum"] = [const]
            t = t or "string"
    if isinstance(t, str):
        out["type"] = t
    if nullable:
        out["nullable"] = True
    for k in _COPY:
        if k in schema:
            out[k] = schema[k]
    fmt = schema.get("format")
    if isinstance(fmt, str) and isinstance(t, str) and fmt in _FORMATS.get(t, ()):
        out["format"] = fmt
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(e, str) for e in enum):
        out["enum"] = enum
    props = schema.get("properties")
    if isinstance(props, dict) and props:
        out["properties"] = {k: _clean(v, defs, depth + 1) for k, v in props.items() if isinstance(v, dict)}
        required = [r for r in schema.get("required") or () if r in out["properties"]]
        if required:
            out["required"] = required
    items = schema.get("items")
    if isinstance(items, dict):
        out["items"] = _clean(items, defs, depth + 1)
    return out


def schema_from_gemini(schema: Any) -> Obj:
    """A Gemini ``Schema`` (types in either case) as a JSON Schema."""
    if not isinstance(schema, dict):
        return {}
    out: Obj = {}
    for k, v in schema.items():
        if k == "type" and isinstance(v, str):
            out["type"] = v.lower()
        elif k == "properties" and isinstance(v, dict):
            out["properties"] = {name: schema_from_gemini(p) for name, p in v.items()}
        elif k == "items":
            out["items"] = schema_from_gemini(v)
        elif k == "anyOf" and isinstance(v, list):
            out["anyOf"] = [schema_from_gemini(s) for s in v]
        elif k != "nullable":
            out[k] = v
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out
