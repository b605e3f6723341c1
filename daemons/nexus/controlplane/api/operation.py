"""What an admin API endpoint is: one ``Operation`` record per method and path.

The router runs every operation the same way: authenticate, parse path/query/body against the
declared schemas, ``locate`` the target (its NRN, org and tags, read inside the request's
transaction), authorise ``action`` on that NRN through IAM, run ``handler``, and for writes
append the admin audit entry in the same transaction before commit. A handler therefore sees
only validated input and an already authorised target.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from nexus.controlplane.iam.nrn import format_nrn
from nexus.controlplane.principal import Principal

if TYPE_CHECKING:
    from starlette.requests import Request

    from nexus.controlplane.services import Services
    from nexus.storage.pg import TrioConnection

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


def nrn(service: str, org_path: str | None, rtype: str, rid: str = "*") -> str:
    """``nrn:nexus:<service>:<scope>:<type>/<id>``; rows without an org have the empty (system) scope."""
    return format_nrn(service, org_path, rtype, rid)


@attrs.frozen
class Target:
    """What an operation acts on, as IAM and the audit log see it."""

    nrn: str
    org_id: uuid.UUID | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict)
    before: Mapping[str, Any] | None = None


@attrs.frozen
class Reply:
    """A handler's answer; ``after`` is what the audit log records, ``signal`` what gateways reload."""

    body: Any = None
    status: int = 200
    after: Mapping[str, Any] | None = None
    signal: tuple[str, str | None] | None = None
    nrn: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)


@attrs.define
class Call:
    request: Request
    services: Services
    principal: Principal
    conn: TrioConnection[Any]
    params: dict[str, str]
    query: Any
    body: Any
    source_ip: str | None
    request_id: str
    target: Target = attrs.field(default=Target(nrn="nrn:nexus:platform::unlocated/*"))

    def path_uuid(self, name: str = "id") -> uuid.UUID:
        from nexus.controlplane.api.errors import ApiError

        try:
            return uuid.UUID(self.params[name])
        except (KeyError, ValueError):
            raise ApiError(404, "not_found", f"no such {name}: {self.params.get(name, '')!r}") from None


Handler = Callable[[Call], Awaitable[Reply]]
Locator = Callable[[Call], Awaitable[Target]]


@attrs.frozen
class Operation:
    method: Method
    path: str
    action: str
    summary: str
    tag: str
    handler: Handler
    locate: Locator
    body: type | None = None
    partial_body: bool = False
    query: type | None = None
    response: Any = None
    paged: bool = False
    status: int = 200
    public: bool = False
    operation_id: str = ""

    @property
    def writes(self) -> bool:
        return self.method != "GET"

    @property
    def id(self) -> str:
        if self.operation_id:
            return self.operation_id
        slug = self.path.removeprefix("/api/").replace("{", "").replace("}", "").replace("-", "_").replace("/", "_")
        return f"{self.method.lower()}_{slug}"
