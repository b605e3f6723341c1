"""A small real OpenID Connect provider for tests: HTTPS on 127.0.0.1, a random port, a throwaway CA.

It serves discovery, JWKS, an authorization endpoint that signs in one configured
user at once (no page) and a token endpoint that checks the client secret and the
PKCE verifier and answers with an RS256 ID token carrying the nonce.  Knobs make it
misbehave the ways a broken or hostile IdP would: wrong nonce, wrong audience,
expired token, bad signature, refused sign-in.

    idp = OidcProvider(tmp_path, client_id="nexus", client_secret="s3cret")
    await nursery.start(idp.run)        # idp.issuer is https://127.0.0.1:<port>, trust idp.ca_file
    idp.knobs.wrong_nonce = True        # the next ID token carries another nonce
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import attrs
import jwt
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route


@attrs.define
class Knobs:
    wrong_nonce: bool = False
    wrong_audience: bool = False
    expired: bool = False
    bad_signature: bool = False
    deny: bool = False  # the authorization endpoint answers error=access_denied


@attrs.define
class User:
    subject: str = "idp-user-1"
    claims: dict[str, Any] = attrs.field(factory=dict)  # email, name, groups, ...


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def mint_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a leaf for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test IdP CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class OidcProvider:
    def __init__(self, directory: Path, *, client_id: str, client_secret: str | None = None,
                 user: User | None = None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.user = user or User()
        self.knobs = Knobs()
        self.ca_file, self._cert, self._key = mint_tls(directory)
        self._signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-" + secrets.token_hex(4)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.issuer = f"https://127.0.0.1:{self.port}"
        self._codes: dict[str, dict[str, Any]] = {}
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, Any]] = []
        self._shutdown = trio.Event()

    # -- endpoints ---------------------------------------------------------------------------

    async def _discovery(self, _request: Request) -> Response:
        return JSONResponse({
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        })

    async def _jwks(self, _request: Request) -> Response:
        jwk = RSAAlgorithm.to_jwk(self._signing.public_key(), as_dict=True)
        return JSONResponse({"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]})

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.authorize_requests.append(params)
        redirect_uri = params.get("redirect_uri", "")
        if params.get("client_id") != self.client_id or not redirect_uri:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        reply: dict[str, str] = {}
        if self.knobs.deny:
            reply["error"] = "access_denied"
        elif params.get("response_type") != "code" or params.get("code_challenge_method") != "S256" \
                or not params.get("code_challenge"):
            reply["error"] = "invalid_request"
        else:
            code = secrets.token_urlsafe(24)
            self._codes[code] = {"nonce": params.get("nonce"), "challenge": params["code_challenge"],
                                 "redirect_uri": redirect_uri}
            reply["code"] = code
        if "state" in params:
            reply["state"] = params["state"]
        return RedirectResponse(redirect_uri + "?" + urlencode(reply), status_code=302)

    def _client_ok(self, request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            ident, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            given: tuple[str, str | None] = (ident, secret)
        else:
            given = (form.get("client_id", ""), form.get("client_secret"))
        if given[0] != self.client_id:
            return False
        if self.client_secret is None:
            return given[1] is None
        return given[1] is not None and hmac.compare_digest(given[1], self.client_secret)

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        self.token_requests.append({"form": {k: v for k, v in form.items() if k != "client_secret"},
                                    "basic": request.headers.get("authorization", "").lower().startswith("basic ")})
        if not self._client_ok(request, form):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "redirect_uri"}, status_code=400)
        if _s256(form.get("code_verifier", "")) != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "pkce"}, status_code=400)
        now = int(time.time()) - (7200 if self.knobs.expired else 0)
        claims = {"iss": self.issuer, "sub": self.user.subject,
                  "aud": "someone-else" if self.knobs.wrong_audience else self.client_id,
                  "iat": now, "exp": now + 300, "nonce": "not-your-nonce" if self.knobs.wrong_nonce else grant["nonce"],
                  **self.user.claims}
        key = self._impostor if self.knobs.bad_signature else self._signing
        id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})
        return JSONResponse({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300,
                             "id_token": id_token}, headers={"cache-control": "no-store"})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/.well-known/openid-configuration", self._discovery),
            Route("/jwks", self._jwks),
            Route("/authorize", self._authorize),
            Route("/token", self._token, methods=["POST"]),
        ])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or ``stop()``."""
        config = Config()
        config.certfile = str(self._cert)
        config.keyfile = str(self._key)
        config.accesslog = None
        config.graceful_timeout = 1.0
        await worker_serve(wrap_app(self.app(), config.wsgi_max_body_size, "asgi"), config,
                           sockets=Sockets(secure_sockets=[self._sock], insecure_sockets=[], quic_sockets=[]),
                           shutdown_trigger=self._shutdown.wait, task_status=task_status)

    def stop(self) -> None:
        self._shutdown.set()
