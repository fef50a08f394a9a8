"""A small but real OpenID Connect provider: the third-party stand-in for OAuth login.

    python -m aether_devstack.oidc_provider --port 9400 \\
        --client-id aether-dev --client-secret dev-only-oidc-secret \\
        --redirect-uri http://127.0.0.1:8080/api/auth/oauth/devoidc/callback

What it serves (issuer defaults to http://127.0.0.1:PORT):
- `GET /.well-known/openid-configuration`: the discovery document;
- `GET /jwks`: its RSA public key (a fresh 2048-bit key per process);
- `GET /authorize`: the authorization endpoint. It checks `client_id` and `redirect_uri` against
  the registered client (a bad one is a 400 page, never a redirect), needs `response_type=code`,
  `scope` with `openid` and a PKCE `code_challenge` (S256 only), then approves at once and
  redirects to `redirect_uri?code=...&state=...`. The signed-in user is the test identity:
  `login_hint=<email>` (else `--email`), optionally `test_email_verified=false`,
  `test_sub=<subject>` (default: derived from the email) and `test_name=<name>`;
- `POST /token`: `grant_type=authorization_code`; client authentication by HTTP Basic or form
  (`client_secret_basic` / `client_secret_post`); the code is single use, expires after
  `--code-ttl` seconds, must come with the same `redirect_uri` and a `code_verifier` whose
  S256 matches. Answers an access token and an RS256 `id_token` with `iss`, `sub`, `aud`,
  `exp`, `iat`, `auth_time`, `nonce` (when the authorization request had one), `email`,
  `email_verified`, `name`;
- `GET /userinfo` (Bearer access token) and `GET /healthz`.
Errors follow RFC 6749 (`{"error": "invalid_grant", "error_description": ...}`).

From Python (tests, the e2e suite): `proc = spawn(port, redirect_uris=[...])` starts it as a
subprocess and returns once it answers; `create_app(ProviderConfig(...))` gives the ASGI app.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

DEFAULT_CLIENT_ID = "aether-dev"
DEFAULT_CLIENT_SECRET = "dev-only-oidc-secret"  # noqa: S105 (local stand-in only)
DEFAULT_EMAIL = "dev.user@example.com"


@dataclass(frozen=True)
class ProviderConfig:
    issuer: str
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    redirect_uris: tuple[str, ...] = ()
    default_email: str = DEFAULT_EMAIL
    code_ttl_s: int = 60
    token_ttl_s: int = 3600


@dataclass(frozen=True)
class _Grant:
    """What an authorization code stands for until it is redeemed."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    claims: dict[str, Any]
    expires_at: float


@dataclass
class _State:
    key: rsa.RSAPrivateKey
    kid: str
    codes: dict[str, _Grant] = field(default_factory=dict)
    access_tokens: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _subject_for(email: str) -> str:
    return hashlib.sha256(email.lower().encode()).hexdigest()[:24]


def create_app(config: ProviderConfig) -> Starlette:
    """The provider as an ASGI app (a new signing key per app)."""
    state = _State(
        key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        kid=secrets.token_hex(8),
    )
    issuer = config.issuer.rstrip("/")

    async def discovery(request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "userinfo_endpoint": f"{issuer}/userinfo",
                "jwks_uri": f"{issuer}/jwks",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
                "claims_supported": ["sub", "email", "email_verified", "name", "nonce"],
            }
        )

    async def jwks(request: Request) -> Response:
        jwk = RSAAlgorithm.to_jwk(state.key.public_key(), as_dict=True)
        jwk |= {"kid": state.kid, "alg": "RS256", "use": "sig"}
        return JSONResponse({"keys": [jwk]})

    async def authorize(request: Request) -> Response:
        q = request.query_params
        client_id, redirect_uri = q.get("client_id", ""), q.get("redirect_uri", "")
        # Never redirect to an unverified URI (RFC 6749 4.1.2.1): answer the browser directly.
        if client_id != config.client_id:
            return PlainTextResponse("unknown client_id", status_code=400)
        if redirect_uri not in config.redirect_uris:
            return PlainTextResponse("redirect_uri is not registered", status_code=400)

        def back(**params: str) -> Response:
            if q.get("state"):
                params["state"] = q["state"]
            separator = "&" if "?" in redirect_uri else "?"
            return RedirectResponse(f"{redirect_uri}{separator}{urlencode(params)}", 302)

        if q.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if "openid" not in q.get("scope", "").split():
            return back(error="invalid_scope", error_description="scope must include openid")
        if not q.get("code_challenge") or q.get("code_challenge_method") != "S256":
            return back(error="invalid_request", error_description="PKCE S256 is required")
        email = q.get("login_hint") or config.default_email
        now = time.time()
        claims: dict[str, Any] = {
            "sub": q.get("test_sub") or _subject_for(email),
            "email": email,
            "email_verified": q.get("test_email_verified", "true").lower() != "false",
            "name": q.get("test_name") or email.partition("@")[0],
            "auth_time": int(now),
        }
        code = secrets.token_urlsafe(32)
        state.codes[code] = _Grant(
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=q["code_challenge"],
            nonce=q.get("nonce"),
            scope=q.get("scope", ""),
            claims=claims,
            expires_at=now + config.code_ttl_s,
        )
        return back(code=code)

    async def read_form(request: Request) -> dict[str, str]:
        # application/x-www-form-urlencoded by hand: Starlette's parser needs python-multipart.
        return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))

    def authenticate_client(request: Request, form: dict[str, str]) -> str | None:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:]).decode()
            except ValueError:
                return None
            client_id, _, secret = decoded.partition(":")
        if client_id == config.client_id and hmac.compare_digest(secret, config.client_secret):
            return client_id
        return None

    async def token(request: Request) -> Response:
        form = await read_form(request)
        client_id = authenticate_client(request, form)
        if client_id is None:
            return _oauth_error("invalid_client", "client authentication failed", 401)
        if form.get("grant_type") != "authorization_code":
            return _oauth_error("unsupported_grant_type", "only authorization_code")
        grant = state.codes.pop(form.get("code", ""), None)  # single use
        if grant is None or grant.expires_at < time.time():
            return _oauth_error("invalid_grant", "unknown, used or expired code")
        if grant.client_id != client_id:
            return _oauth_error("invalid_grant", "code was issued to another client")
        if form.get("redirect_uri") != grant.redirect_uri:
            return _oauth_error("invalid_grant", "redirect_uri differs from the authorization")
        verifier = form.get("code_verifier", "")
        if not verifier or not hmac.compare_digest(_s256(verifier), grant.code_challenge):
            return _oauth_error("invalid_grant", "PKCE code_verifier does not match")
        now = int(time.time())
        id_claims = {
            "iss": issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + config.token_ttl_s,
            **grant.claims,
        }
        if grant.nonce is not None:
            id_claims["nonce"] = grant.nonce
        id_token = jwt.encode(id_claims, state.key, algorithm="RS256", headers={"kid": state.kid})
        access_token = secrets.token_urlsafe(32)
        state.access_tokens[access_token] = (grant.claims, now + config.token_ttl_s)
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": config.token_ttl_s,
                "id_token": id_token,
                "scope": grant.scope,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def userinfo(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        found = (
            state.access_tokens.get(header[7:]) if header.lower().startswith("bearer ") else None
        )
        if found is None or found[1] < time.time():
            return _oauth_error("invalid_token", "unknown or expired access token", 401)
        claims = found[0]
        return JSONResponse({k: claims[k] for k in ("sub", "email", "email_verified", "name")})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks", jwks),
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
            Route("/userinfo", userinfo),
            Route("/healthz", healthz),
        ]
    )


def spawn(
    port: int,
    *,
    redirect_uris: Sequence[str],
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    host: str = "127.0.0.1",
    timeout: float = 20.0,
    start_new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start the provider as a subprocess on `port` and wait until it answers (tests, e2e).

    The issuer is `http://HOST:PORT`. Stop it with `terminate()` then `wait()`.
    `start_new_session`: its own process group (`aether-dev up`: Ctrl-C reaches only `up`, and
    `down` can stop it by group).
    """
    argv = [sys.executable, "-m", "aether_devstack.oidc_provider", "--host", host]
    argv += ["--port", str(port), "--client-id", client_id, "--client-secret", client_secret]
    for uri in redirect_uris:
        argv += ["--redirect-uri", uri]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=start_new_session,
    )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"OIDC provider exited with {proc.returncode}: {stderr}")
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1):
                return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"OIDC provider not ready on port {port}") from None
            time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aether_devstack.oidc_provider",
        description="A local OpenID Connect provider for development and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", help="default http://HOST:PORT")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        required=True,
        help="a registered redirect URI (repeat for more)",
    )
    parser.add_argument("--email", default=DEFAULT_EMAIL, help="identity when no login_hint")
    parser.add_argument("--code-ttl", type=int, default=60, help="seconds (default 60)")
    args = parser.parse_args(argv)
    config = ProviderConfig(
        issuer=args.issuer or f"http://{args.host}:{args.port}",
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uris=tuple(args.redirect_uri),
        default_email=args.email,
        code_ttl_s=args.code_ttl,
    )
    print(f"OIDC provider {config.issuer} for client {config.client_id}", flush=True)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
