"""Password guessing: per-account lockout, per-IP limit, one message for every bad sign-in."""

from __future__ import annotations

from typing import Any

from aether.auth.v1 import auth_pb2, events_pb2
from aether_auth import events


async def test_lockout_after_five_failures_and_no_account_enumeration(
    start_auth: Any, kit: Any
) -> None:
    auth = await start_auth(ip_failure_limit=1000)
    email = kit.unique_email()
    user = await auth.register(email)
    unknown = kit.unique_email("ghost")

    # Wrong password and unknown account: the very same answer.
    for address in (email, unknown):
        for _ in range(4):
            error = await kit.failure(auth.login(address, "wrong password!"))
            assert (error.http_status, error.detail) == (401, "invalid email or password")
    # The fifth failure locks, for the real and the unknown address alike.
    for address in (email, unknown):
        locked = await kit.failure(auth.login(address, "wrong password!"))
        assert locked.http_status == 429
        assert locked.error_code == "account_locked"
        assert locked.retry_after == 15 * 60
        assert "try again in 15 minutes" in locked.detail
    # Locked means locked: the right password is refused too, with the time left.
    still = await kit.failure(auth.login(email))
    assert still.http_status == 429
    assert 0 < still.retry_after <= 15 * 60

    failed = await auth.events(events.LOGIN_FAILED, events_pb2.UserLoginFailed)
    mine = [e.payload.reason for e in failed if e.payload.user_id == user.id]
    assert mine == ["bad_credentials"] * 5 + ["locked"]
    ghost = [e for e in failed if e.payload.email == unknown]
    assert {e.payload.user_id for e in ghost} == {""}
    assert {e.subject for e in ghost} == {unknown}
    locked_out = await auth.events(events.LOCKED_OUT, events_pb2.UserLockedOut)
    assert [(e.subject, e.payload.lock_seconds) for e in locked_out] == [(user.id, 900)]
    assert locked_out[0].payload.client.ip == "203.0.113.7"

    # The account's failures are in its login history (shown by the GDPR export).
    history = await auth.sql(
        "SELECT success, reason FROM login_history WHERE user_id = $1::uuid", user.id
    )
    assert [(r["success"], r["reason"]) for r in history] == [(False, "bad_credentials")] * 5


async def test_success_resets_the_failure_count(start_auth: Any, kit: Any) -> None:
    auth = await start_auth(lockout_threshold=3)
    email = kit.unique_email()
    await auth.register(email)
    for _ in range(2):
        await kit.failure(auth.login(email, "wrong password!"))
    await auth.tokens(email)
    for _ in range(2):
        error = await kit.failure(auth.login(email, "wrong password!"))
        assert error.http_status == 401


async def test_per_ip_limit_spans_accounts(start_auth: Any, kit: Any) -> None:
    auth = await start_auth(ip_failure_limit=3)
    for _ in range(3):
        error = await kit.failure(auth.login(kit.unique_email(), "wrong password!"))
        assert error.http_status == 401
    email = kit.unique_email()
    await auth.register(email)
    throttled = await kit.failure(auth.login(email))
    assert throttled.http_status == 429
    assert throttled.error_code == "ip_throttled"
    # Another client address is not affected.
    other = await auth.stub.Login(
        auth_pb2.LoginRequest(
            email=email, password=auth.PASSWORD, client=auth_pb2.ClientInfo(ip="198.51.100.1")
        )
    )
    assert other.WhichOneof("result") == "tokens"
    reasons = [
        e.payload.reason for e in await auth.events(events.LOGIN_FAILED, events_pb2.UserLoginFailed)
    ]
    assert reasons == ["bad_credentials"] * 3 + ["throttled"]
