"""Values made from JSON schemas validate against them (checked with jsonschema_rs)."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pydantic
import pytest

from nexus.mock.schemagen import generate


class Leaf(pydantic.BaseModel):
    label: str
    weight: float


class Tree(pydantic.BaseModel):
    name: str
    leaves: list[Leaf]
    children: list[Tree]
    parent: Tree | None


SCHEMAS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "string", "minLength": 40},
    {"type": "string", "maxLength": 2},
    {"type": "string", "format": "email"},
    {"type": "string", "format": "uuid"},
    {"type": "integer", "minimum": 100, "maximum": 100},
    {"type": "integer", "exclusiveMinimum": 41, "exclusiveMaximum": 43},
    {"type": "integer", "maximum": -5},
    {"type": "number", "minimum": 0, "maximum": 1},
    {"type": "integer", "multipleOf": 7, "minimum": 1},
    {"type": "boolean"},
    {"type": "null"},
    {"type": ["null", "integer"]},
    {"enum": ["red", "green"]},
    {"const": {"fixed": 1}},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3, "uniqueItems": True},
    {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 3, "uniqueItems": True},
    {"type": "array", "maxItems": 0},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "minItems": 2},
    {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}]},
    {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
        ]
    },
    {
        "type": "object",
        "properties": {"deep": {"$ref": "#/definitions/deep"}},
        "required": ["deep"],
        "definitions": {"deep": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
    },
    {"type": "object", "required": ["undeclared"]},
    {"type": "object", "properties": {"city": {"type": "string"}, "when": {"type": "string", "format": "date"}}},
    Tree.model_json_schema(),
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_generated_value_is_valid(schema: dict[str, Any]) -> None:
    value = generate(schema)
    jsonschema_rs.validate(schema, value)


def test_values_are_plausible_and_typed_by_gemini_style_names() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "age": {"type": "INTEGER"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
            "price": {"type": "NUMBER"},
        },
    }
    assert generate(schema) == {"city": "Paris", "age": 30, "tags": ["example tag"], "price": 20.5}


def test_without_required_every_property_is_generated_and_with_it_only_those() -> None:
    props = {"a": {"type": "string"}, "b": {"type": "integer"}}
    assert set(generate({"type": "object", "properties": props})) == {"a", "b"}
    assert set(generate({"type": "object", "properties": props, "required": ["b"]})) == {"b"}


def test_recursion_through_refs_terminates() -> None:
    schema = {
        "$ref": "#/$defs/node",
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}, "required": ["next"]}},
    }
    value = generate(schema)
    depth = 0
    while isinstance(value, dict):
        value = value["next"]
        depth += 1
    assert 3 < depth < 20
