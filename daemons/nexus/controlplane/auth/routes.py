"""HTTP for sign-in: Starlette routes over ``AuthService``.

Three response shapes, one per audience:

- ``/oauth/token`` and ``/oauth/revoke``: RFC 6749 errors ``{"error", "error_description"}``
  (401 ``invalid_client``, otherwise 400; 503 ``temporarily_unavailable``), ``Cache-Control: no-store``.
- ``/oauth/authorize`` and ``/oauth/federated/*``: HTML for the browser.  Errors about the client or
  its redirect URI are shown on a page and never sent to the URI; every other error goes back to the
  client as ``error``/``error_description``/``state``/``iss`` query parameters (RFC 6749 §4.1.2.1,
  RFC 9207).  The form is bound to the browser by an HttpOnly SameSite=Lax cookie, so a cross-site
  page can neither submit it nor complete someone else's federated sign-in.
- ``/api/auth/*``: the admin API's ``{"error": {"code", "message"}}``.

``POST /api/auth/login`` ``{"email", "password", "totp"?}`` serves only the first-party console
client and answers with a token response.  When the account must change its password it answers
403 ``password_change_required``; the console then calls ``POST /api/auth/password``
``{"email", "password", "new_password", "totp"?}``, which checks the same credentials, sets the
new password, revokes the account's other sessions and answers with a token response.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import jinja2
import orjson
import psycopg
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from nexus.controlplane.auth import oauth
from nexus.controlplane.auth.errors import AuthError, OAuthError, SignInError
from nexus.controlplane.auth.federation import FederationError
from nexus.controlplane.auth.local import SignedInUser
from nexus.controlplane.auth.service import AuthService
from nexus.net.resp.client import ValkeyConnectionError, ValkeyError

__all__ = ["auth_routes"]

logger = logging.getLogger(__name__)

BIND_COOKIE = "nexus_signin"
MAX_FORM_BYTES = 16 * 1024
_UNAVAILABLE = (psycopg.Error, ValkeyConnectionError, ValkeyError, OSError)
_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
_HTML_HEADERS = {
    **_NO_STORE,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                               "base-uri 'none'",
}

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("nexus.controlplane.auth", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined,
)


class BadRequest(Exception):
    pass


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; a repeated parameter is an error (RFC 6749 §3.1)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise BadRequest("body must be application/x-www-form-urlencoded")
    body = await _body(request)
    try:
        items = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8") from None
    form: dict[str, str] = {}
    for key, value in items:
        if key in form:
            raise BadRequest(f"parameter {key!r} repeated")
        form[key] = value
    return form


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise BadRequest("body too large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadRequest("body too large")
    return body


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _oauth_error(exc: OAuthError, basic: bool = False) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["www-authenticate"] = 'Basic realm="nexus"' if basic else 'Bearer realm="nexus"'
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _api_error(status: int, code: str, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = dict(_NO_STORE)
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return JSONResponse({"error": {"code": code, "message": message, "details": {}}}, status_code=status,
                        headers=headers)


def _page(name: str, status: int = 200, cookie: tuple[str, bool] | None = None, **context: Any) -> HTMLResponse:
    response = HTMLResponse(_templates.get_template(name).render(**context), status_code=status,
                            headers=_HTML_HEADERS)
    if cookie is not None:
        value, secure = cookie
        response.set_cookie(BIND_COOKIE, value, path="/oauth", httponly=True, samesite="lax", secure=secure)
    return response


def _error_page(code: str, message: str, status: int = 400) -> HTMLResponse:
    return _page("error.html.j2", status, code=code, message=message)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=302, headers=_NO_STORE)


def auth_routes(service: AuthService) -> list[BaseRoute]:
    settings = service.settings
    issuer = service.issuer

    def bind_of(request: Request) -> str:
        return request.cookies.get(BIND_COOKIE, "")

    def to_client(redirect_uri: str, params: list[tuple[str, str]], state: str | None) -> RedirectResponse:
        if state is not None:
            params.append(("state", state))
        params.append(("iss", issuer))
        return _redirect(oauth.with_query(redirect_uri, params))

    # -- discovery ---------------------------------------------------------------------------

    async def metadata(_request: Request) -> Response:
        return JSONResponse(service.metadata(), headers={"cache-control": "public, max-age=300"})

    async def jwks(_request: Request) -> Response:
        return JSONResponse(service.ring.jwks(), headers={"cache-control": "public, max-age=300"})

    # -- authorize ---------------------------------------------------------------------------

    async def open_request(record: Mapping[str, Any], bind: str) -> bool:
        return isinstance(record.get("bind"), str) and bool(bind) and hmac.compare_digest(record["bind"], bind)

    async def login_page(request_id: str, record: Mapping[str, Any], *, status: int = 200, email: str = "",
                         error: SignInError | None = None, change_password: bool = False,
                         ask_totp: bool = False, cookie: tuple[str, bool] | None = None,
                         notice: tuple[str, str] | None = None) -> HTMLResponse:
        providers = await service.federation.providers()
        return _page("login.html.j2", status, cookie=cookie, client_name=record.get("client_name", ""),
                     request_id=request_id, email=email or record.get("login_hint", ""), action="/oauth/authorize",
                     error=error.message if error else "", error_code=error.code if error else "",
                     notice=notice[1] if notice else "", notice_code=notice[0] if notice else "",
                     change_password=change_password, ask_totp=ask_totp, min_length=settings.password_min_length,
                     providers=[(str(i), n) for i, n in providers], federated_path="/oauth/federated")

    async def authorize_get(request: Request) -> Response:
        params = request.query_params.multi_items()
        try:
            client = await service.sessions.client(dict(params).get("client_id", ""))
            try:
                asked = oauth.validate_authorize(params, client)
            except oauth.AuthorizeError as exc:
                if not exc.redirect:
                    return _error_page(exc.error, exc.description)
                return to_client(dict(params)["redirect_uri"],
                                 [("error", exc.error), ("error_description", exc.description)],
                                 dict(params).get("state"))
            assert client is not None
            bind = bind_of(request)
            if len(bind) != 43:
                bind = secrets.token_urlsafe(32)
            record = {"client_id": asked.client_id, "client_name": client.name, "redirect_uri": asked.redirect_uri,
                      "state": asked.state, "scopes": list(asked.scopes), "code_challenge": asked.code_challenge,
                      "login_hint": asked.login_hint, "bind": bind}
            request_id = await service.pending.put("authz", record)
            return await login_page(request_id, record, cookie=(bind, service.secure_cookies))
        except _UNAVAILABLE as exc:
            logger.error("sign-in storage unavailable: %s", type(exc).__name__)
            return _error_page("temporarily_unavailable", "sign-in is temporarily unavailable", 503)

    async def complete(record: Mapping[str, Any], user: SignedInUser) -> Response:
        """Issue our authorization code for a signed-in user and send it to the client."""
        client = await service.sessions.client(str(record["client_id"]))
        if client is None or not client.enabled:
            return _error_page("invalid_client", "this application is no longer registered")
        code = await service.sessions.create_code(
            client=client, user_id=user.id, redirect_uri=str(record["redirect_uri"]),
            code_challenge=str(record["code_challenge"]), scopes=list(record["scopes"]), amr=user.amr,
            auth_time=user.auth_time)
        return to_client(str(record["redirect_uri"]), [("code", code)], record.get("state"))

    async def authorize_post(request: Request) -> Response:
        try:
            try:
                form = await read_form(request)
            except BadRequest as exc:
                return _error_page("invalid_request", str(exc))
            request_id = form.get("request_id", "")
            record = await service.pending.get("authz", request_id)
            if record is None or not await open_request(record, bind_of(request)):
                return _error_page("expired", "this sign-in form has expired")
            email = form.get("email", "")
            new_password = form.get("new_password") or None
            if new_password is not None and new_password != form.get("new_password_confirm"):
                mismatch = SignInError("password_mismatch", "the new passwords do not match", status=400)
                return await login_page(request_id, record, status=400, email=email, error=mismatch,
                                        change_password=True)
            try:
                user = await service.local.sign_in(email, form.get("password", ""), form.get("totp") or None,
                                                   new_password=new_password, source_ip=client_ip(request))
            except SignInError as exc:
                if exc.code == "mfa_required":
                    return await login_page(request_id, record, email=email, ask_totp=True,
                                            notice=(exc.code, exc.message))
                if exc.code == "password_change_required":
                    return await login_page(request_id, record, email=email, change_password=True,
                                            notice=(exc.code, exc.message))
                # The form is not an HTTP authentication scheme: a refused password is a 400 page, not a 401.
                status = 400 if exc.status == 401 else exc.status
                page = await login_page(request_id, record, status=status, email=email, error=exc,
                                        change_password=exc.code == "weak_password",
                                        ask_totp=exc.code == "invalid_mfa")
                if exc.retry_after is not None:
                    page.headers["retry-after"] = str(exc.retry_after)
                return page
            await service.pending.delete("authz", request_id)
            return await complete(record, user)
        except _UNAVAILABLE as exc:
            logger.error("sign-in storage unavailable: %s", type(exc).__name__)
            return _error_page("temporarily_unavailable", "sign-in is temporarily unavailable", 503)

    # -- federation --------------------------------------------------------------------------

    async def federated_start(request: Request) -> Response:
        try:
            idp_id = uuid.UUID(request.path_params["idp_id"])
        except ValueError:
            return _error_page("not_found", "unknown identity provider", 404)
        request_id = request.query_params.get("request_id", "")
        try:
            bind = bind_of(request)
            record = await service.pending.get("authz", request_id)
            if record is None or not await open_request(record, bind):
                return _error_page("expired", "this sign-in has expired")
            return _redirect(await service.federation.start(idp_id, request_id, bind))
        except FederationError as exc:
            return _error_page("federation_failed", exc.message, exc.status)
        except _UNAVAILABLE as exc:
            logger.error("sign-in storage unavailable: %s", type(exc).__name__)
            return _error_page("temporarily_unavailable", "sign-in is temporarily unavailable", 503)

    async def federated_callback(request: Request) -> Response:
        params = dict(request.query_params)
        try:
            bind = bind_of(request)
            request_id, user = await service.federation.finish(params, bind)
            record = await service.pending.take("authz", request_id)
            if record is None or not await open_request(record, bind):
                return _error_page("expired", "this sign-in has expired")
            return await complete(record, user)
        except FederationError as exc:
            return _error_page("federation_failed", exc.message, exc.status)
        except _UNAVAILABLE as exc:
            logger.error("sign-in storage unavailable: %s", type(exc).__name__)
            return _error_page("temporarily_unavailable", "sign-in is temporarily unavailable", 503)

    # -- token endpoint and revocation -------------------------------------------------------

    async def token(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        basic = bool(authorization and authorization[:6].lower() == "basic ")
        try:
            form = await read_form(request)
            body = await service.token(form, authorization, source_ip=client_ip(request),
                                       user_agent=request.headers.get("user-agent"))
        except BadRequest as exc:
            return _oauth_error(OAuthError("invalid_request", str(exc)))
        except OAuthError as exc:
            return _oauth_error(exc, basic)
        except _UNAVAILABLE as exc:
            logger.error("token endpoint storage unavailable: %s", type(exc).__name__)
            return _oauth_error(OAuthError("temporarily_unavailable", "try again shortly", 503))
        return JSONResponse(body, headers=_NO_STORE)

    async def revoke(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        basic = bool(authorization and authorization[:6].lower() == "basic ")
        try:
            await service.revoke(await read_form(request), authorization)
        except BadRequest as exc:
            return _oauth_error(OAuthError("invalid_request", str(exc)))
        except OAuthError as exc:
            return _oauth_error(exc, basic)
        except _UNAVAILABLE as exc:
            logger.error("revocation storage unavailable: %s", type(exc).__name__)
            return _oauth_error(OAuthError("temporarily_unavailable", "try again shortly", 503))
        return Response(status_code=200, headers=_NO_STORE)

    # -- first-party JSON API ----------------------------------------------------------------

    async def read_json(request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise BadRequest("body must be application/json")
        try:
            body = orjson.loads(await _body(request))
        except orjson.JSONDecodeError:
            raise BadRequest("body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    def fields(body: Mapping[str, Any], *names: str, optional: tuple[str, ...] = ()) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for name in names + optional:
            value = body.get(name)
            if value is None and name in optional:
                out[name] = None
            elif not isinstance(value, str) or (name in names and not value):
                raise BadRequest(f"{name} must be a non-empty string")
            else:
                out[name] = value
        return out

    def json_handler(run: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            try:
                return await run(request)
            except BadRequest as exc:
                return _api_error(400, "invalid_request", str(exc))
            except SignInError as exc:
                return _api_error(exc.status, exc.code, exc.message, exc.retry_after)
            except AuthError as exc:
                response = _api_error(exc.status, exc.code, exc.message)
                if exc.status == 401:
                    response.headers["www-authenticate"] = exc.www_authenticate
                return response
            except OAuthError as exc:
                return _api_error(400 if exc.status != 503 else 503, exc.error, exc.description)
            except _UNAVAILABLE as exc:
                logger.error("sign-in storage unavailable: %s", type(exc).__name__)
                return _api_error(503, "unavailable", "sign-in is temporarily unavailable")
        return handler

    async def console_client() -> oauth.Client:
        client = await service.sessions.client(settings.console_client_id)
        if client is None or not client.enabled or not client.first_party:
            raise AuthError(503, "console_client_missing", "the console client is not set up (seed_oauth_clients)")
        return client

    async def json_session(request: Request, user: SignedInUser, client: oauth.Client) -> Response:
        body = await service.start_session(user_id=user.id, client=client, scopes=client.scopes, amr=user.amr,
                                           auth_time=user.auth_time, source_ip=client_ip(request),
                                           user_agent=request.headers.get("user-agent"))
        return JSONResponse(body, headers=_NO_STORE)

    async def api_login(request: Request) -> Response:
        body = await read_json(request)
        f = fields(body, "email", "password", optional=("totp",))
        client = await console_client()
        user = await service.local.sign_in(str(f["email"]), str(f["password"]), f["totp"],
                                           source_ip=client_ip(request))
        return await json_session(request, user, client)

    async def api_password(request: Request) -> Response:
        body = await read_json(request)
        f = fields(body, "email", "password", "new_password", optional=("totp",))
        client = await console_client()
        user = await service.local.sign_in(str(f["email"]), str(f["password"]), f["totp"],
                                           new_password=str(f["new_password"]), source_ip=client_ip(request))
        return await json_session(request, user, client)

    async def api_logout(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        body: dict[str, Any] = {}
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await read_json(request)
        refresh = body.get("refresh_token")
        families: set[uuid.UUID] = set()
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(401, "invalid_token", "use Authorization: Bearer <access token>")
            claims = service.authenticator.verify(token.strip())
            families.add(uuid.UUID(claims.session_id))
        if isinstance(refresh, str) and refresh:
            family = await service.sessions.family_of(refresh, None)
            if family is not None:
                families.add(family)
        if not authorization and not isinstance(refresh, str):
            raise AuthError(401, "missing_credentials", "send the access token or the refresh token to sign out")
        for family in families:
            await service.end_session(family)
        return Response(status_code=204, headers=_NO_STORE)

    return [
        Route("/.well-known/openid-configuration", metadata, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", metadata, methods=["GET"]),
        Route("/oauth/jwks.json", jwks, methods=["GET"]),
        Route("/oauth/authorize", authorize_get, methods=["GET"]),
        Route("/oauth/authorize", authorize_post, methods=["POST"]),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/oauth/revoke", revoke, methods=["POST"]),
        Route("/oauth/federated/callback", federated_callback, methods=["GET"]),
        Route("/oauth/federated/{idp_id}/start", federated_start, methods=["GET"]),
        Route("/api/auth/login", json_handler(api_login), methods=["POST"]),
        Route("/api/auth/password", json_handler(api_password), methods=["POST"]),
        Route("/api/auth/logout", json_handler(api_logout), methods=["POST"]),
    ]
