"""Aether auth service: accounts, tokens (EdDSA JWT + JWKS), MFA, OAuth/OIDC, RBAC, GDPR."""
