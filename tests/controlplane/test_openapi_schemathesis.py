"""schemathesis against ``/api/openapi.json`` with a super-admin token: no 5xx, every response as documented.

One test per operation, generated from the route table, so a new route is fuzzed as soon as it exists.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from tests.controlplane.conftest import ControlPlane

from nexus.controlplane.api.operation import Operation
from nexus.controlplane.resources import all_operations

OPERATIONS = all_operations()
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def document(cp: ControlPlane) -> dict[str, object]:
    response = httpx.get(cp.url + "/api/openapi.json", timeout=30)
    assert response.status_code == 200
    return dict(response.json())


@pytest.fixture(scope="module")
def api_schema(document: dict[str, object]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_dict(document)


def test_document_is_openapi_31(document: dict[str, object]) -> None:
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    assert isinstance(paths, dict)
    served = {(op.method.lower(), op.path) for op in OPERATIONS}
    documented = {(method, path) for path, methods in paths.items() for method in methods}
    assert served == documented
    for methods in paths.values():
        for operation in methods.values():
            assert operation["operationId"] and operation["x-nexus-action"]


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_operation_conforms(api_schema: schemathesis.BaseSchema, cp: ControlPlane, op: Operation) -> None:
    headers = {"authorization": f"Bearer {cp.token('super-admins')}"}
    operation = api_schema[op.path][op.method]

    @settings(max_examples=15, deadline=None, phases=[Phase.explicit, Phase.generate], database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=cp.url, headers=headers, checks=CHECKS)

    run()
