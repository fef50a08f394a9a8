"""Webhook channel: secrets at rest, the signature, and an SSRF-safe POST.

Signature (Stripe's scheme): `X-Aether-Signature: t=<unix seconds>,v1=<hex>` where
hex = HMAC-SHA256(secret, f"{t}.{body}"). During a rotation's grace period a second `v1=` signed
with the previous secret follows. A receiver recomputes the HMAC over the raw body with its secret,
compares in constant time against any `v1`, and rejects a `t` older than a few minutes (replay).

The POST (`post`): only http and https URLs. Outside `AETHER_ENV=dev` the host is resolved once,
EVERY address is checked (no loopback, private, link-local, multicast, reserved or unspecified,
IPv4-mapped ones included) and the connection goes to the checked address itself, so a second
DNS answer cannot swap in an internal one (DNS rebinding); the Host header and TLS SNI/certificate
check use the name. Redirects are not followed (a 3xx is a failure), timeouts are short and at
most `READ_LIMIT` bytes of the answer are read. A hand-written HTTP/1.1 request over asyncio
streams, because pinning the address while verifying the name is what general clients hide.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aether_common.secret_box import SecretBox as Box
from aether_common.secret_box import SecretBoxError

READ_LIMIT = 4096
PURPOSE = "webhook-secret"


SecretKeyError = SecretBoxError  # a stored webhook secret does not decrypt


class SecretBox:
    """Webhook secrets at rest (aether_common.secret_box: AES-256-GCM, an HKDF key of
    ALERTS_WEBHOOK_SECRET_KEY); the endpoint id is the associated data, so a ciphertext cannot
    be moved to another endpoint."""

    def __init__(self, master: str) -> None:
        self._box = Box(master, salt=b"aether-alerts", setting="ALERTS_WEBHOOK_SECRET_KEY")

    def seal(self, secret: str, endpoint_id: str) -> bytes:
        return self._box.encrypt(PURPOSE, secret.encode(), endpoint_id.encode())

    def open(self, blob: bytes, endpoint_id: str) -> str:
        return self._box.decrypt(PURPOSE, blob, endpoint_id.encode()).decode()


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secrets_: list[str], body: bytes, *, now: int | None = None) -> str:
    t = int(time.time()) if now is None else now
    signed = f"{t}.".encode() + body
    parts = [f"t={t}"]
    parts += ["v1=" + hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets_]
    return ",".join(parts)


def verify(header: str, body: bytes, secret: str, *, tolerance_s: int = 300) -> bool:
    """What a receiver does (tests use it; docs/alerts.md shows it)."""
    fields = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in fields if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    t = int(stamps[0])
    if abs(time.time() - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for k, v in fields if k == "v1")


class UrlRefused(ValueError):
    """The URL is not one we send to (scheme, host, or an address outside dev rules)."""


def check_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of an acceptable URL, or UrlRefused."""
    if len(url) > 2048:
        raise UrlRefused("url: at most 2048 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("url: only http and https URLs")
    if not parts.hostname:
        raise UrlRefused("url: no host")
    if parts.username or parts.password:
        raise UrlRefused("url: credentials in the URL are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UrlRefused("url: bad port") from exc
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, target


def address_refused(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bool(
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


async def resolve_checked(host: str, port: int, *, allow_internal: bool) -> list[str]:
    """The addresses to connect to, in the resolver's order: every one must pass."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UrlRefused(f"host {host!r} does not resolve") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UrlRefused(f"host {host!r} does not resolve")
    if not allow_internal:
        bad = [a for a in addresses if address_refused(a)]
        if bad:
            raise UrlRefused(f"host {host!r} resolves to a non-public address ({bad[0]})")
    return addresses


async def _connect(
    addresses: list[str], port: int, tls: ssl.SSLContext | None, host: str, timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the first checked address that answers; TLS verifies `host` (SNI and
    the certificate's name), not the address."""
    error: OSError | TimeoutError = OSError(f"no address of {host}")
    for ip in addresses:
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(ip, port, ssl=tls, server_hostname=host if tls else None),
                timeout_s,
            )
        except ssl.SSLError:
            raise  # the name's certificate is wrong: another address will not fix it
        except (OSError, TimeoutError) as exc:
            error = exc
    raise error


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    head: bytes  # status line and headers, at most READ_LIMIT bytes


async def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_internal: bool,
    connect_timeout_s: float,
    timeout_s: float,
    trust: ssl.SSLContext | None = None,
) -> Answer:
    """POST `body` to `url`, pinned to the checked addresses (tried in order, each with
    `connect_timeout_s`). UrlRefused, OSError, TimeoutError or ValueError (a garbled answer)
    when it did not get an HTTP status. `trust`: the TLS context (default: the system's CAs)."""
    scheme, host, port, target = check_url(url)
    addresses = await resolve_checked(host, port, allow_internal=allow_internal)
    tls = (trust or ssl.create_default_context()) if scheme == "https" else None
    async with asyncio.timeout(timeout_s):
        reader, writer = await _connect(addresses, port, tls, host, connect_timeout_s)
        try:
            default_port = 443 if scheme == "https" else 80
            host_header = host if port == default_port else f"{host}:{port}"
            if ":" in host and not host.startswith("["):
                host_header = f"[{host}]" + ("" if port == default_port else f":{port}")
            lines = [
                f"POST {target} HTTP/1.1",
                f"Host: {host_header}",
                "Content-Type: application/json",
                f"Content-Length: {len(body)}",
                "Connection: close",
                "User-Agent: Aether-Webhooks/1",
                *(f"{k}: {v}" for k, v in headers.items()),
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
            head = b""  # up to the status line, never more than READ_LIMIT
            while b"\r\n" not in head and len(head) < READ_LIMIT:
                chunk = await reader.read(READ_LIMIT - len(head))
                if not chunk:
                    break
                head += chunk
        finally:
            writer.close()
    status_line = head.split(b"\r\n", 1)[0].split()
    if (
        len(status_line) < 2
        or not status_line[0].startswith(b"HTTP/")
        or not status_line[1].isdigit()
    ):
        raise ValueError("not an HTTP answer")
    return Answer(int(status_line[1]), head)
