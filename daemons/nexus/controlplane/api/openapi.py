"""The OpenAPI 3.1 document, rendered from the same operations the router serves."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import attrs

from nexus.controlplane.api.errors import ERROR_SCHEMA
from nexus.controlplane.api.operation import Operation
from nexus.controlplane.api.schema import json_schema

_ERRORS = {
    "400": "Malformed request", "401": "Missing, expired or invalid credentials",
    "403": "Not allowed by IAM policy", "404": "Not found", "409": "Conflict with existing state",
    "413": "Body too large", "422": "Validation failed (the message names the field)",
    "503": "A dependency is unavailable",
}


def _parameters(op: Operation, defs: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{([^}:]+)", op.path)
    ]
    if op.query is not None:
        for attribute in attrs.fields(attrs.resolve_types(op.query)):
            prop = json_schema(attribute.type, defs)
            prop.update(attribute.metadata.get("schema", {}))
            description = prop.pop("description", "")
            param: dict[str, Any] = {"name": attribute.name, "in": "query", "required": False, "schema": prop}
            if description:
                param["description"] = description
            params.append(param)
    return params


def _response_schema(op: Operation, defs: dict[str, Any]) -> dict[str, Any] | None:
    if op.response is None:
        return None
    item = json_schema(op.response, defs)
    if not op.paged:
        return item
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": item},
                       "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        "additionalProperties": False,
    }


def document(operations: Sequence[Operation], *, title: str, version: str, server_url: str) -> dict[str, Any]:
    defs: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        responses: dict[str, Any] = {}
        body_schema = _response_schema(op, defs)
        if op.status == 204 or body_schema is None:
            responses[str(op.status)] = {"description": op.summary}
        else:
            responses[str(op.status)] = {"description": op.summary,
                                         "content": {"application/json": {"schema": body_schema}}}
        for code, text in _ERRORS.items():
            if code == "413" and op.body is None:
                continue
            responses[code] = {"description": text,
                               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        entry: dict[str, Any] = {
            "operationId": op.id, "summary": op.summary, "tags": [op.tag], "responses": responses,
            "x-nexus-action": op.action,
        }
        params = _parameters(op, defs)
        if params:
            entry["parameters"] = params
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": json_schema(op.body, defs, partial=op.partial_body)}}}
        if op.public:
            entry["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "OAuth 2.1 access token (JWT) or admin API key (nxa_…)"}},
        },
        "security": [{"bearer": []}],
    }
