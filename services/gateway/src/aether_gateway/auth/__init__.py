"""The gateway's side of auth: `/api/auth/*` and `/api/admin/*` over auth's AuthService (gRPC).

routes.py (`/api/auth/*`, the JWKS) and admin_routes.py (`/api/admin/*`) are thin: each parses,
calls one RPC and shapes the answer (convert.py, schemas.py); cache.py keeps `GET /api/auth/me`
answers in Redis.
"""
