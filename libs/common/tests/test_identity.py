"""`CallerIdentity.is_service`: a service token's identity, and nothing else, is a service."""

from __future__ import annotations

from aether_common.identity import ANONYMOUS, CallerIdentity


def test_a_service_token_identity_is_a_service() -> None:
    service = CallerIdentity(user_id="service:alerts", roles=frozenset({"service"}))
    assert service.is_service
    assert service.service_name == "alerts"


def test_users_and_anonymous_are_not_services() -> None:
    user = CallerIdentity(user_id="3f1c0a52-0000-4000-8000-000000000000", roles=frozenset({"user"}))
    # Both marks are needed: the subject alone or the role alone is not a service.
    only_subject = CallerIdentity(user_id="service:alerts", roles=frozenset({"user"}))
    only_role = CallerIdentity(user_id="u-1", roles=frozenset({"service"}))
    for identity in (user, only_subject, only_role, ANONYMOUS):
        assert not identity.is_service
        assert identity.service_name is None
