"""The three error shapes of sign-in.

``AuthError`` is what the authenticator raises for an admin API request (the API
framework renders it in its ``{"error": {"code", "message"}}`` shape);
``OAuthError`` is an RFC 6749 error of the token, revocation and authorization
endpoints; ``SignInError`` is a refused credential check, shared by the login
form and the JSON login.  Messages never contain a secret.
"""

from __future__ import annotations


class AuthError(Exception):
    """The caller could not be authenticated.

    ``code`` is stable and machine-readable: ``missing_credentials``,
    ``invalid_token``, ``token_expired``, ``session_revoked``, ``user_inactive``,
    ``invalid_api_key``, ``api_key_expired``, ``api_key_revoked``,
    ``auth_unavailable`` (503: the store could not be asked).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @property
    def www_authenticate(self) -> str:
        """The RFC 6750 challenge to send with a 401."""
        if self.code == "missing_credentials":
            return 'Bearer realm="nexus"'
        return f'Bearer realm="nexus", error="invalid_token", error_description="{self.message}"'


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: ``{"error": ..., "error_description": ...}`` with ``status``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class SignInError(Exception):
    """A refused sign-in.

    Codes: ``invalid_credentials`` (unknown email or wrong password: the same
    answer for both), ``mfa_required`` (password right, TOTP code missing),
    ``invalid_mfa`` (TOTP code wrong or replayed), ``account_locked``
    (``retry_after`` seconds), ``account_disabled``,
    ``password_change_required`` (the password was right but must be changed
    first: call ``POST /api/auth/password``), ``weak_password``,
    ``unavailable`` (storage down).
    """

    def __init__(self, code: str, message: str, *, status: int = 401, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
