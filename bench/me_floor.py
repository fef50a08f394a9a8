"""The floor of an uncached `GET /api/auth/me`: the work of gateway -> GetMe -> auth, done bare.

    python bench/me_floor.py grpc PORT CONFIG     # the auth side
    python bench/me_floor.py http PORT CONFIG     # the gateway side

bench/auth.py starts both (CONFIG: one JSON argument, see `FloorConfig`) and drives the HTTP side
with the load it drives the uncached gateway with, in the same run. Nothing of the kit's here: no
interceptors, middleware, dependencies, metrics, logging, error mapping or retries. Each side
keeps only the work the request cannot skip, done the way our services do it:

HTTP side (one FastAPI route under uvicorn with uvloop, as the gateway runs):
- the bearer token verified as the gateway's `aether_common.access_tokens.TokenVerifier` does:
  PyJWT, EdDSA with the Ed25519 key of auth's JWKS, header typ/alg/kid, issuer, audience,
  leeway, required claims; a verified token is kept until it expires (a hit checks `exp` and
  that its key is still known);
- ONE EVALSHA of the gateway's own access script (ACCESS_LUA of
  `aether_gateway.revoked_or_limited`: the revocation keys, then the caller's sliding window)
  with the gateway's keys and arguments, through aether_common's AutoPipeline;
- ONE GetMe over a plain `grpc.aio.insecure_channel`, the token forwarded as
  `authorization: Bearer ...`, with a deadline;
- the gateway's UserOut JSON built from the reply, with the rate-limit headers.

gRPC side (a plain `grpc.aio.server()` with auth's AuthService servicer, uvloop, as auth runs):
- the forwarded token verified as auth's `AccessTokens.verify` does (same library, key, checks,
  cache of verified tokens);
- ONE MGET of the three revocation keys through AutoPipeline, as auth's `RevocationList`;
- auth's transaction for GetMe: BEGIN, auth's two statements (the user's row, its OAuth
  identities: the SQL of `aether_auth.repository.get_user` / `list_identities`), COMMIT, on an
  asyncpg pool of auth's size with the kit's no-op reset;
- the GetMeResponse built from the rows (permissions from the verified claims).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from fastapi import FastAPI, Request  # module level: FastAPI resolves the route's annotations here
from fastapi.responses import Response

ALGORITHM = "EdDSA"
TOKEN_TYPE = "at+jwt"  # noqa: S105 (a JWT typ)
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti", "sid"]
VERIFIED_CACHE_SIZE = 4096
AUTH_POOL_MAX = 10  # auth's Database default
# auth's statements for GetMe (aether_auth.repository.get_user and list_identities).
USER_SQL = (
    "SELECT id, email, email_verified, password_hash, display_name, plan, role, mfa_enabled, "
    "created_at, updated_at, password_changed_at FROM users WHERE id = $1"
)
IDENTITIES_SQL = """SELECT provider, subject, user_id, email, linked_at FROM oauth_identities
           WHERE user_id = $1 ORDER BY provider, linked_at"""


@dataclass(frozen=True)
class FloorConfig:
    jwks: dict[str, Any]  # auth's JWKS document
    issuer: str
    audience: str
    leeway_s: float
    redis_url: str
    # HTTP side
    upstream: str = ""  # host:port of the gRPC side
    timeout_s: float = 5.0
    revocation_prefix: str = "auth:revoked:"  # auth's keys, as the gateway reads them
    gateway_prefix: str = "gateway:"  # the gateway's own denylist and rate-limit logs
    limit: int = 60
    window_ms: int = 60_000
    # gRPC side
    dsn: str = ""

    @classmethod
    def parse(cls, text: str) -> FloorConfig:
        return cls(**json.loads(text))


class Refused(Exception):
    """The token does not pass (401 / UNAUTHENTICATED)."""


class Verifier:
    """EdDSA access tokens checked as our verifiers check them, verified ones kept to expiry."""

    def __init__(self, config: FloorConfig) -> None:
        self.keys = {entry["kid"]: jwt.PyJWK(entry) for entry in config.jwks["keys"]}
        self.issuer, self.audience, self.leeway_s = config.issuer, config.audience, config.leeway_s
        self._verified: dict[str, tuple[dict[str, Any], str]] = {}

    def verify(self, token: str) -> dict[str, Any]:
        hit = self._verified.get(token)
        if hit is not None:
            known, known_kid = hit
            if time.time() > known["exp"] + self.leeway_s or known_kid not in self.keys:
                del self._verified[token]
                raise Refused("expired or withdrawn")
            return known
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            key = self.keys.get(kid) if isinstance(kid, str) else None
            if header.get("alg") != ALGORITHM or header.get("typ") != TOKEN_TYPE or key is None:
                raise Refused("header")
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise Refused(str(exc)) from None
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (claims, str(kid))
        return claims


def bearer(value: str | None) -> str | None:
    scheme, _, token = (value or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def access_call(
    config: FloorConfig, claims: dict[str, Any], member: str
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of the gateway's ACCESS_LUA for a verified caller: the revocation
    keys, then the caller's sliding window (`member`: a unique entry of it). The script answers
    (revoked, allowed, remaining)."""
    jti, sub = claims["jti"], claims["sub"]
    revoked = config.revocation_prefix
    keys = [
        f"{revoked}jti:{jti}",
        f"{config.gateway_prefix}revoked:jti:{jti}",
        f"{revoked}sid:{claims['sid']}",
        f"{revoked}user:{sub}",
        f"{config.gateway_prefix}rl:user:{sub}",
    ]
    return keys, [claims["iat"], config.limit, config.window_ms, member]


# -- the gateway side ------------------------------------------------------------------------------
def serve_http(port: int, config: FloorConfig) -> None:
    import grpc
    import uvicorn
    from redis.asyncio import Redis

    from aether.auth.v1 import auth_pb2, auth_pb2_grpc
    from aether_common.redis_pipeline import AutoPipeline
    from aether_gateway.revoked_or_limited import ACCESS_LUA

    verifier = Verifier(config)
    member_prefix = secrets.token_hex(8)
    members = itertools.count()
    held: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(config.redis_url, decode_responses=True)
        pipeline = AutoPipeline(redis)
        channel = grpc.aio.insecure_channel(config.upstream)
        held.update(access=pipeline.script(ACCESS_LUA), stub=auth_pb2_grpc.AuthServiceStub(channel))
        yield
        await channel.close(grace=None)
        await redis.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/api/auth/me")
    async def me(request: Request) -> Response:
        token = bearer(request.headers.get("authorization"))
        if token is None:
            return Response(status_code=401)
        try:
            claims = verifier.verify(token)
        except Refused:
            return Response(status_code=401)
        keys, args = access_call(config, claims, f"{member_prefix}{next(members)}")
        result = await held["access"](keys=keys, args=args)
        if int(result[0]):
            return Response(status_code=401)
        if not int(result[1]):
            return Response(status_code=429)
        reply = await held["stub"].GetMe(
            auth_pb2.GetMeRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=config.timeout_s,
        )
        body = json.dumps(user_json(reply.user, auth_pb2))
        headers = {"X-RateLimit-Limit": str(config.limit), "X-RateLimit-Remaining": str(result[2])}
        return Response(body, media_type="application/json", headers=headers)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )


def user_json(user: Any, auth_pb2: Any) -> dict[str, Any]:
    """The gateway's UserOut of a User message (aether_gateway.convert.user)."""
    created = None
    if user.HasField("created_time"):
        created = user.created_time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        "display_name": user.display_name,
        "plan": auth_pb2.Plan.Name(user.plan).removeprefix("PLAN_").lower(),
        "role": auth_pb2.Role.Name(user.role).removeprefix("ROLE_").lower(),
        "permissions": list(user.permissions),
        "mfa_enabled": user.mfa_enabled,
        "created_time": created,
        "oauth_providers": list(user.oauth_providers),
    }


# -- the auth side ---------------------------------------------------------------------------------
def serve_grpc(port: int, config: FloorConfig) -> None:
    import asyncpg
    import grpc
    import uvloop
    from google.protobuf.timestamp_pb2 import Timestamp
    from redis.asyncio import Redis

    from aether.auth.v1 import auth_pb2, auth_pb2_grpc
    from aether_common.redis_pipeline import AutoPipeline

    verifier = Verifier(config)
    revoked = config.revocation_prefix

    async def no_reset(connection: Any) -> None:
        return None  # as aether_common.postgres.create_pool: nothing to reset on release

    class FloorAuth(auth_pb2_grpc.AuthServiceServicer):
        def __init__(self, pool: Any, reads: AutoPipeline) -> None:
            self.pool = pool
            self.reads = reads

        async def GetMe(self, request: Any, context: Any) -> Any:
            metadata: Sequence[tuple[str, str]] = context.invocation_metadata() or ()
            token = bearer(dict(metadata).get("authorization"))
            if token is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no token")
            try:
                claims = verifier.verify(token or "")
            except Refused:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
            jti, sid, user_revoked = await self.reads.execute(
                "MGET", f"{revoked}jti:{claims['jti']}", f"{revoked}sid:{claims['sid']}",
                f"{revoked}user:{claims['sub']}",
            )  # fmt: skip
            if (
                jti is not None
                or sid is not None
                or (user_revoked is not None and claims["iat"] < int(user_revoked))
            ):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "revoked")
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(USER_SQL, uuid.UUID(claims["sub"]))
                if row is None:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "account deleted")
                identities = await conn.fetch(IDENTITIES_SQL, row["id"])
            return auth_pb2.GetMeResponse(user=user_pb(row, identities, claims))

    def user_pb(row: Mapping[str, Any], identities: Sequence[Any], claims: Any) -> Any:
        created = Timestamp()
        created.FromDatetime(row["created_at"])
        return auth_pb2.User(
            id=str(row["id"]),
            email=row["email"],
            email_verified=row["email_verified"],
            display_name=row["display_name"],
            plan=auth_pb2.Plan.Value(f"PLAN_{row['plan'].upper()}"),
            role=auth_pb2.Role.Value(f"ROLE_{row['role'].upper()}"),
            permissions=claims.get("perms", []),
            mfa_enabled=row["mfa_enabled"],
            created_time=created,
            oauth_providers=sorted({i["provider"] for i in identities}),
        )

    async def main() -> None:
        pool = await asyncpg.create_pool(
            config.dsn, min_size=1, max_size=AUTH_POOL_MAX, reset=no_reset
        )
        redis = Redis.from_url(config.redis_url, decode_responses=True)
        server = grpc.aio.server()
        # GetMe only: the base class answers UNIMPLEMENTED for the rest.
        servicer = FloorAuth(pool, AutoPipeline(redis))  # type: ignore[abstract]
        auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("side", choices=["http", "grpc"])
    parser.add_argument("port", type=int)
    parser.add_argument("config", help="FloorConfig as JSON")
    args = parser.parse_args()
    config = FloorConfig.parse(args.config)
    if args.side == "http":
        serve_http(args.port, config)
    else:
        serve_grpc(args.port, config)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        main()
