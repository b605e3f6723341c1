"""Operations → Starlette routes: the one path every admin request takes.

authenticate → parse → (transaction: locate → authorise → handler → audit) → publish signal.
Denials are audited too (outcome ``denied``), in their own transaction, so a refused write
leaves a trace even though nothing changed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import types
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

import attrs
import orjson
import psycopg
from psycopg import errors as pgerrors
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nexus import signals
from nexus.controlplane.api import schema
from nexus.controlplane.api.authz import Denied, decide
from nexus.controlplane.api.errors import ApiError
from nexus.controlplane.api.operation import Call, Operation, Reply, Target, nrn
from nexus.controlplane.audit.log import append_in
from nexus.controlplane.audit.mask import mask_secrets
from nexus.controlplane.audit.record import AdminAuditEntry
from nexus.controlplane.auth.authenticate import AuthError
from nexus.controlplane.iam.actions import CATALOGUE
from nexus.controlplane.principal import Principal
from nexus.controlplane.services import Services
from nexus.runtime import logs

log = logging.getLogger("nexus.controlplane.api")

MAX_BODY = 1 << 20


def source_ip(request: Request, trusted_proxies: Sequence[str] = ("127.0.0.1", "::1")) -> str | None:
    """The caller's address; X-Forwarded-For is believed only from the local nginx."""
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and peer in trusted_proxies:
        candidate = forwarded.split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            return peer
    return peer


def _query_value(raw: str, tp: Any) -> Any:
    """Coerce one query-string value to the field's type before cattrs checks it."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        return _query_value(raw, members[0]) if len(members) == 1 else raw
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            return raw
    if tp is bool:
        return {"true": True, "false": False}.get(raw.lower(), raw)
    if origin is Literal and all(isinstance(a, int) for a in get_args(tp)):
        try:
            return int(raw)
        except ValueError:
            return raw
    return raw


def parse_query(cls: type[Any], params: Mapping[str, str]) -> Any:
    fields = {a.name: a for a in attrs.fields(attrs.resolve_types(cls))}
    data: dict[str, Any] = {}
    for key, raw in params.items():
        attribute = fields.get(key)
        if attribute is None:
            raise ApiError(422, "validation_error", f"{key}: unknown query parameter", {"field": key})
        data[key] = _query_value(raw, attribute.type)
    return schema.parse(cls, data)


async def _read_json(request: Request) -> Any:
    declared = request.headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"body exceeds {MAX_BODY} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise ApiError(413, "payload_too_large", f"body exceeds {MAX_BODY} bytes")
    if not raw.strip():
        raise ApiError(422, "validation_error", "body: a JSON object is required", {"field": "body"})
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc.msg}") from None


def database_error(exc: psycopg.Error) -> ApiError:
    """Constraint violations are the caller's mistake: say which constraint, never the SQL."""
    diag = exc.diag
    constraint = diag.constraint_name or ""
    column = diag.column_name or ""
    if isinstance(exc, pgerrors.UniqueViolation):
        return ApiError(409, "conflict", "a resource with these values already exists", {"constraint": constraint})
    if isinstance(exc, pgerrors.ForeignKeyViolation):
        return ApiError(422, "validation_error", "refers to a resource that does not exist or is still in use",
                        {"constraint": constraint})
    if isinstance(exc, pgerrors.RestrictViolation):
        return ApiError(409, "conflict", "the resource is still referenced", {"constraint": constraint})
    if isinstance(exc, pgerrors.IntegrityConstraintViolation | pgerrors.DataException | pgerrors.RaiseException):
        detail = (diag.message_primary or "").split("\n")[0][:200]
        field_name = column or constraint
        return ApiError(422, "validation_error", f"{field_name or 'body'}: {detail}" if detail else "invalid value",
                        {"field": field_name or None})
    raise exc


def _entry(call: Call, op: Operation, outcome: str, target: Target, after: Mapping[str, Any] | None,
           nrn_override: str | None = None) -> AdminAuditEntry:
    principal = call.principal
    return AdminAuditEntry(
        actor_type=principal.kind, actor_id=principal.id, actor_label=principal.label, action=op.action,
        resource_nrn=nrn_override or target.nrn, org_id=target.org_id, outcome=outcome,
        before=mask_secrets(dict(target.before)) if target.before is not None else None,
        after=mask_secrets(dict(after)) if after is not None else None,
        source_ip=call.source_ip, user_agent=call.request.headers.get("user-agent"), request_id=call.request_id,
        ts=dt.datetime.now(dt.UTC),
    )


def _rtype(action: str) -> str:
    return action.partition(":")[2].rpartition(".")[0]


def _forbidden(action: str, resource: str) -> ApiError:
    return ApiError(403, "forbidden", f"not allowed: {action} on {resource}", {"action": action, "resource": resource})


class Router:
    def __init__(self, services: Services, operations: Sequence[Operation]) -> None:
        self.services = services
        self.operations = list(operations)

    def routes(self) -> list[Route]:
        by_path: dict[str, dict[str, Operation]] = {}
        for op in self.operations:
            by_path.setdefault(op.path, {})[op.method] = op
        return [Route(path, self._endpoint(methods), methods=list(methods)) for path, methods in by_path.items()]

    def _endpoint(self, methods: Mapping[str, Operation]) -> Any:
        async def endpoint(request: Request) -> Response:
            op = methods[request.method if request.method != "HEAD" else "GET"]
            rid = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
            token = logs.request_id.set(rid)
            try:
                response = await self._run(op, request, rid)
            except ApiError as exc:
                response = exc.response()
            finally:
                logs.request_id.reset(token)
            response.headers["x-request-id"] = rid
            return response

        return endpoint

    async def _run(self, op: Operation, request: Request, rid: str) -> Response:
        ip = source_ip(request)
        try:
            principal = await self.services.authenticator.authenticate(request.headers.get("authorization"), ip)
        except AuthError as exc:
            return ApiError(exc.status, exc.code, exc.message).response({"www-authenticate": 'Bearer realm="nexus"'})
        try:
            query = parse_query(op.query, request.query_params) if op.query else None
            body: Any = None
            if op.body is not None:
                raw = await _read_json(request)
                body = schema.parse_partial(op.body, raw) if op.partial_body else schema.parse(op.body, raw)
            reply, denied = await self._transact(op, request, principal, query, body, ip, rid)
        except ApiError as exc:
            if exc.status in (400, 404, 413, 422) and not await self._may_try(op, principal, ip):
                return _forbidden(op.action, _rtype(op.action)).response()
            raise
        if denied is not None:
            return denied
        assert reply is not None
        if reply.signal is not None:
            await self._publish(*reply.signal)
        if reply.status == 204:
            return Response(status_code=204, headers=dict(reply.headers))
        content = orjson.dumps(schema.unstructure(reply.body))
        return Response(content, status_code=reply.status, media_type="application/json", headers=dict(reply.headers))

    async def _may_try(self, op: Operation, principal: Principal, ip: str | None) -> bool:
        """Could this caller do ``op`` on *some* resource of its type, in its org or system-wide?

        Asked only when a request failed before its target was known (bad body, unknown id), so
        a caller without the permission learns nothing about what exists or what a valid body is.
        """
        if op.action.startswith("my:"):  # my:* acts on the caller's own user, whatever the id named
            own = Target(nrn=nrn("iam", principal.org_path, "user", str(principal.id)))
            return (await decide(self.services, principal, op.action, own, ip)).allowed
        rtype = _rtype(op.action)
        kind = CATALOGUE.get(rtype)
        if kind is None:
            return True
        for scope in (principal.org_path, None):
            target = Target(nrn=nrn(kind.service, scope, rtype, "*"), tags={"owner": str(principal.id)})
            if (await decide(self.services, principal, op.action, target, ip)).allowed:
                return True
        return False

    async def _transact(
        self, op: Operation, request: Request, principal: Principal, query: Any, body: Any, ip: str | None, rid: str
    ) -> tuple[Reply | None, Response | None]:
        pg = self.services.pg
        try:
            async with pg.connection() as conn, conn.transaction():
                call = Call(request=request, services=self.services, principal=principal, conn=conn,
                            params=dict(request.path_params), query=query, body=body, source_ip=ip, request_id=rid)
                call.target = await op.locate(call)
                decision = await decide(self.services, principal, op.action, call.target, ip)
                if not decision.allowed:
                    denied_call = call
                else:
                    reply = await op.handler(call)
                    if op.writes:
                        await append_in(conn, _entry(call, op, "success", call.target, reply.after, reply.nrn))
                    return reply, None
        except Denied as exc:
            # A second check inside the handler refused: the transaction is rolled back, the denial is not.
            await self._audit_denied(call, op, exc.target)
            raise
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                log.warning("database unavailable during %s %s: %s", op.method, op.path, type(exc).__name__)
                raise ApiError(503, "unavailable", "the database is unavailable; retry shortly") from None
            raise database_error(exc) from None
        await self._audit_denied(denied_call, op, denied_call.target)
        log.info("denied %s on %s for %s %s: %s", op.action, denied_call.target.nrn, principal.kind, principal.id,
                 decision.reason)
        return None, _forbidden(op.action, denied_call.target.nrn).response()

    async def _audit_denied(self, call: Call, op: Operation, target: Target) -> None:
        """Outside the request's transaction: the denial is recorded even though nothing else is."""
        async with self.services.pg.connection() as conn, conn.transaction():
            await append_in(conn, _entry(call, op, "denied", target, None, target.nrn))

    async def _publish(self, kind: str, resource_id: str | None) -> None:
        try:
            await self.services.nats.publish(signals.PREFIX + kind, signals.encode(resource_id))
        except Exception:  # a missed signal is healed by the daemons' reload on reconnect
            log.warning("could not publish config signal %s", kind)
