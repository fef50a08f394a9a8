"""A service acting for a user (aether_common.delegation) against the real auth: the worker's
own service token (from IssueServiceToken) plus `x-aether-on-behalf-of` reads the user's
ExportMyData, the same document the user gets; every other account RPC refuses a delegate
(password, MFA, profile, sessions, deletion, admin), and leaves the account as it was; a service
not in AUTH_DELEGATING_SERVICES, or a user's token, may not name anyone."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from aether.auth.v1 import auth_pb2
from aether_auth.config import ServiceClientSettings, secret_sha256
from aether_common.identity import ON_BEHALF_OF_KEY

WORKER_SECRET = secrets.token_urlsafe(32)
ALERTS_SECRET = secrets.token_urlsafe(32)
Metadata = tuple[tuple[str, str], ...]


async def start(start_auth: Any, **overrides: Any) -> Any:
    clients = {
        "worker": ServiceClientSettings(secret_sha256=secret_sha256(WORKER_SECRET)),
        "alerts": ServiceClientSettings(secret_sha256=secret_sha256(ALERTS_SECRET)),
    }
    return await start_auth(service_clients=clients, **overrides)


async def service_metadata(auth: Any, kit: Any, client_id: str, secret: str) -> Metadata:
    issued = await auth.stub.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(client_id=client_id, client_secret=secret)
    )
    metadata: Metadata = kit.bearer(issued.access_token)
    return metadata


def acting_for(metadata: Metadata, user_id: str) -> Metadata:
    return (*metadata, (ON_BEHALF_OF_KEY, user_id))


async def export(auth: Any, metadata: Metadata) -> dict[str, Any]:
    answer = await auth.stub.ExportMyData(auth_pb2.ExportMyDataRequest(), metadata=metadata)
    document: dict[str, Any] = json.loads(answer.json)
    return document


async def test_the_worker_acting_for_a_user_gets_their_export(start_auth: Any, kit: Any) -> None:
    auth = await start(start_auth)
    email = kit.unique_email()
    user = await auth.register(email)
    tokens = await auth.tokens(email)
    worker = await service_metadata(auth, kit, "worker", WORKER_SECRET)

    own = await export(auth, kit.bearer(tokens.access_token))
    delegated = await export(auth, acting_for(worker, user.id))

    assert (delegated["service"], delegated["version"]) == ("auth", 1)
    assert delegated["user"]["email"] == email
    own.pop("exported_at"), delegated.pop("exported_at")
    assert delegated == own
    # Someone else's id gives someone else's document, never the first user's.
    other = await auth.register()
    assert (await export(auth, acting_for(worker, other.id)))["user"]["id"] == other.id
    # A named account that does not exist (or a malformed id) is no account: UNAUTHENTICATED.
    for missing in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        gone = await kit.failure(export(auth, acting_for(worker, missing)))
        assert gone.grpc_code is grpc.StatusCode.UNAUTHENTICATED, missing
        assert gone.error_code == "account_deleted"


async def test_a_delegate_can_never_use_the_sensitive_rpcs(start_auth: Any, kit: Any) -> None:
    auth = await start(start_auth)
    email = kit.unique_email()
    user = await auth.register(email)
    tokens = await auth.tokens(email)
    as_worker = acting_for(await service_metadata(auth, kit, "worker", WORKER_SECRET), user.id)
    s = auth.stub
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "GetMe": lambda: s.GetMe(auth_pb2.GetMeRequest(), metadata=as_worker),
        "UpdateProfile": lambda: s.UpdateProfile(
            auth_pb2.UpdateProfileRequest(display_name="Mallory"), metadata=as_worker
        ),
        "ChangePassword": lambda: s.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password=auth.PASSWORD, new_password="a brand new passphrase"
            ),
            metadata=as_worker,
        ),
        "BeginMfaEnrollment": lambda: s.BeginMfaEnrollment(
            auth_pb2.BeginMfaEnrollmentRequest(), metadata=as_worker
        ),
        "ConfirmMfaEnrollment": lambda: s.ConfirmMfaEnrollment(
            auth_pb2.ConfirmMfaEnrollmentRequest(totp_code="123456"), metadata=as_worker
        ),
        "DisableMfa": lambda: s.DisableMfa(
            auth_pb2.DisableMfaRequest(totp_code="123456"), metadata=as_worker
        ),
        "SendEmailVerification": lambda: s.SendEmailVerification(
            auth_pb2.SendEmailVerificationRequest(), metadata=as_worker
        ),
        "Logout": lambda: s.Logout(
            auth_pb2.LogoutRequest(refresh_token=tokens.refresh_token), metadata=as_worker
        ),
        "DeleteMyAccount": lambda: s.DeleteMyAccount(
            auth_pb2.DeleteMyAccountRequest(password=auth.PASSWORD), metadata=as_worker
        ),
        "SetUserAccess": lambda: s.SetUserAccess(
            auth_pb2.SetUserAccessRequest(user_id=user.id, plan=auth_pb2.PLAN_PREMIUM),
            metadata=as_worker,
        ),
    }
    for name, call in calls.items():
        refused = await kit.failure(call())
        assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED, name
        assert refused.error_code == "delegation_refused", name

    # Nothing changed: the password, the session, the profile, the plan, MFA are as they were.
    me = (await s.GetMe(auth_pb2.GetMeRequest(), metadata=kit.bearer(tokens.access_token))).user
    assert (me.display_name, me.plan, me.mfa_enabled) == ("Ada", auth_pb2.PLAN_FREE, False)
    refreshed = await s.Refresh(auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token))
    assert refreshed.tokens.access_token
    assert (await auth.login(email)).WhichOneof("result") == "tokens"


async def test_only_listed_services_may_name_a_user(start_auth: Any, kit: Any) -> None:
    auth = await start(start_auth)
    user = await auth.register()
    alerts = await service_metadata(auth, kit, "alerts", ALERTS_SECRET)
    mallory = await auth.tokens((await auth.register()).email)
    for name, metadata in {
        "a service not listed": acting_for(alerts, user.id),
        "a user's token": acting_for(kit.bearer(mallory.access_token), user.id),
    }.items():
        refused = await kit.failure(export(auth, metadata))
        assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED, name
        assert refused.error_code == "delegation_refused", name
    # A service as itself has no account to export.
    itself = await kit.failure(export(auth, alerts))
    assert itself.grpc_code is grpc.StatusCode.PERMISSION_DENIED
    # With AUTH_DELEGATING_SERVICES empty, the worker is refused too.
    strict = await start(start_auth, delegating_services=[])
    worker = await service_metadata(strict, kit, "worker", WORKER_SECRET)
    strict_user = await strict.register()
    refused = await kit.failure(export(strict, acting_for(worker, strict_user.id)))
    assert refused.grpc_code is grpc.StatusCode.PERMISSION_DENIED
