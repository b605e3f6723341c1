"""Sign-in settings: lifetimes, lockout, federation trust.  Pure attrs, defaults fit the appliance."""

from __future__ import annotations

import attrs
from attrs import validators as v

_positive_int = v.and_(v.instance_of(int), v.gt(0))
_positive_s = v.gt(0.0)


@attrs.frozen(kw_only=True)
class AuthSettings:
    """What ``auth.build`` needs besides storage; ``[control_plane.auth]`` in the config mirrors it."""

    # The ``aud`` of our access tokens: the admin API they are meant for.
    audience: str = "nexus-control-plane"
    access_token_ttl: int = attrs.field(default=3600, validator=v.and_(_positive_int, v.le(24 * 3600)))
    refresh_token_ttl: int = attrs.field(default=24 * 3600, validator=_positive_int)
    # Rotation extends a session by refresh_token_ttl each time, but never past this age of its family.
    session_max_age: int = attrs.field(default=7 * 24 * 3600, validator=_positive_int)
    authorization_code_ttl: int = attrs.field(default=60, validator=v.and_(_positive_int, v.le(600)))
    # How long a login form (and a federated round trip) may stay open.
    login_request_ttl: int = attrs.field(default=600, validator=_positive_int)
    clock_leeway: int = attrs.field(default=30, validator=v.and_(v.instance_of(int), v.ge(0), v.le(300)))
    lockout_threshold: int = attrs.field(default=5, validator=_positive_int)
    # First lock lasts lockout_base; each further failure past the threshold doubles it, up to lockout_max.
    lockout_base: int = attrs.field(default=60, validator=_positive_int)
    lockout_max: int = attrs.field(default=3600, validator=_positive_int)
    password_min_length: int = attrs.field(default=12, validator=v.and_(_positive_int, v.le(256)))
    # How long a verified access token's user and session stay trusted without asking PostgreSQL again:
    # the bound on how late a revocation or a disabled user takes effect.
    session_check_ttl: float = attrs.field(default=5.0, validator=v.ge(0.0))
    # admin_api_key.last_used_at/ip is written at most this often per key (or when the IP changes).
    api_key_touch_interval: float = attrs.field(default=60.0, validator=v.ge(0.0))
    # Federation: https-only issuers and endpoints unless this is set, and then only loopback http.
    allow_insecure_issuers: bool = False
    # Extra CA bundle (PEM) trusted for IdP calls on top of the system store, for an in-house IdP.
    federation_ca_file: str | None = None
    federation_timeout: float = attrs.field(default=10.0, validator=_positive_s)
    discovery_cache_ttl: float = attrs.field(default=3600.0, validator=v.ge(0.0))
    # The first-party console client: the only one /api/auth/login serves.
    console_client_id: str = "nexus-console"
    # Cookies binding a login form to the browser; None = Secure exactly when the issuer is https.
    secure_cookies: bool | None = None
