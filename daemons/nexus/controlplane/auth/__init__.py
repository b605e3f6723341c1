"""Sign-in for the control plane: local passwords with lockout and TOTP, an OAuth 2.1 authorization
server (code + PKCE, rotating refresh tokens, EdDSA JWT access tokens, JWKS, discovery), OIDC
federation with JIT provisioning, admin API keys, and the authenticator the admin API calls.

The app assembler needs::

    service = auth.build(pool, valkey, vault, secrets_dir, issuer=public_url, settings=AuthSettings(...))
    app_routes += service.routes()
    principal = await service.authenticator.authenticate(request.headers.get("authorization"), client_ip)

Module map: ``settings`` (AuthSettings), ``errors``, ``keys`` (signing key files), ``tokens`` (JWT),
``oauth`` (pure protocol rules), ``totp``, ``sessions`` (codes and refresh tokens in PostgreSQL),
``pending`` (login forms and federation state in Valkey), ``local`` (password sign-in),
``federation`` (OIDC), ``apikeys``, ``authenticate``, ``service`` (assembly and grants), ``routes``
(Starlette), ``seed`` (first-party clients).
"""

from nexus.controlplane.auth.apikeys import ApiKeyRow, create_api_key, revoke_api_key
from nexus.controlplane.auth.authenticate import Authenticator
from nexus.controlplane.auth.errors import AuthError, OAuthError, SignInError
from nexus.controlplane.auth.seed import seed_oauth_clients
from nexus.controlplane.auth.service import AuthService, build
from nexus.controlplane.auth.settings import AuthSettings
from nexus.controlplane.auth.tokens import issue_access_token, verify_access_token

__all__ = [
    "ApiKeyRow",
    "AuthError",
    "AuthService",
    "AuthSettings",
    "Authenticator",
    "OAuthError",
    "SignInError",
    "build",
    "create_api_key",
    "issue_access_token",
    "revoke_api_key",
    "seed_oauth_clients",
    "verify_access_token",
]
