"""HTTP routes besides /healthz, /readyz and /metrics: the JWKS document, for verifiers that
prefer HTTP to the GetJwks RPC."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from aether_auth.keys import KeyRing

# Verifiers refetch on an unknown kid anyway; a short max-age keeps rotation quick.
JWKS_MAX_AGE_S = 60


def _keys(request: Request) -> KeyRing:
    keys: KeyRing = request.app.state.auth_keys
    return keys


Keys = Annotated[KeyRing, Depends(_keys)]

router = APIRouter()


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
async def jwks(keys: Keys, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_S}"
    return keys.jwks()
