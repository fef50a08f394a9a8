"""Delegation (aether_common.delegation): a listed service names the user it acts for and the
call becomes that user's; a user's token, an unlisted service or a service id named are refused;
without the header nothing changes. The gRPC path end to end is in ai's tests
(services/ai/tests/test_delegation.py); these are the rules, no I/O."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from aether_common.delegation import DelegatingResolver, acting_for, effective_caller
from aether_common.errors import Forbidden, ValidationFailed
from aether_common.identity import (
    ANONYMOUS,
    ON_BEHALF_OF_KEY,
    CallerIdentity,
    identity_to_metadata,
    metadata_to_dict,
)

WORKER = CallerIdentity(
    user_id="service:worker", roles=frozenset({"service"}), access_token="worker-token"
)
ALERTS = CallerIdentity(
    user_id="service:alerts", roles=frozenset({"service"}), access_token="alerts-token"
)
MALLORY = CallerIdentity(
    user_id="mallory", roles=frozenset({"admin"}), plan="premium", access_token="mallory-token"
)
TRUSTED = ("worker",)


def named(user_id: str) -> dict[str, str]:
    return {ON_BEHALF_OF_KEY: user_id}


def test_a_listed_service_acts_for_the_user_it_names() -> None:
    caller = effective_caller(WORKER, named("alice"), trusted=TRUSTED)
    assert caller.user_id == "alice"
    assert caller.delegated_by == "worker"
    # The service's own token goes on with it (calls it makes while serving stay the service's).
    assert caller.access_token == "worker-token"
    # Nothing of the service's, and no elevated rights: a delegate is an ordinary user.
    assert not caller.is_service
    assert caller.roles == frozenset()
    assert caller.permissions == frozenset()
    assert caller.plan is None


def test_without_the_header_the_verified_caller_stands() -> None:
    for verified in (WORKER, ALERTS, MALLORY, ANONYMOUS):
        assert effective_caller(verified, {}, trusted=TRUSTED) is verified


def test_a_user_token_with_the_header_is_refused() -> None:
    with pytest.raises(Forbidden) as refused:
        effective_caller(MALLORY, named("alice"), trusted=TRUSTED)
    assert refused.value.error_code == "delegation_refused"
    assert ON_BEHALF_OF_KEY in refused.value.detail


def test_a_service_the_receiver_does_not_list_is_refused() -> None:
    with pytest.raises(Forbidden) as refused:
        effective_caller(ALERTS, named("alice"), trusted=TRUSTED)
    assert refused.value.metadata == {"service": "alerts"}
    with pytest.raises(Forbidden):
        effective_caller(WORKER, named("alice"), trusted=())


def test_the_named_id_must_be_a_user() -> None:
    for bad in ("", "   ", "service:auth", "a" * 129, "alice,bob", "al ice"):
        with pytest.raises(ValidationFailed) as refused:
            effective_caller(WORKER, named(bad), trusted=TRUSTED)
        assert ON_BEHALF_OF_KEY in refused.value.field_errors


def test_anonymous_with_the_header_stays_anonymous() -> None:
    # No token: the RPC refuses it as unauthenticated, the header changes nothing.
    assert effective_caller(ANONYMOUS, named("alice"), trusted=TRUSTED) is ANONYMOUS


def test_the_delegated_identity_crosses_the_wire_and_back() -> None:
    """What the caller sends (acting_for through the outgoing metadata) is what the receiver
    turns back into the same user."""
    sent = metadata_to_dict(identity_to_metadata(acting_for("alice", service="worker", token="t")))
    assert sent["authorization"] == "Bearer t"
    assert sent[ON_BEHALF_OF_KEY] == "alice"
    # The receiver verifies the token itself (here: as the worker's) and applies the header.
    received = effective_caller(WORKER, sent, trusted=TRUSTED)
    assert (received.user_id, received.delegated_by) == ("alice", "worker")


class _Fixed:
    def __init__(self, identity: CallerIdentity) -> None:
        self.identity = identity

    async def resolve(self, metadata: Mapping[str, str]) -> CallerIdentity:
        return self.identity


async def test_the_resolver_applies_it_after_verifying() -> None:
    resolver = DelegatingResolver(_Fixed(WORKER), TRUSTED)
    assert (await resolver.resolve(named("alice"))).user_id == "alice"
    assert await resolver.resolve({}) is WORKER
    with pytest.raises(Forbidden):
        await DelegatingResolver(_Fixed(MALLORY), TRUSTED).resolve(named("alice"))
