"""The shared test kit: what every service's tests need and would otherwise copy.

Typed helpers, used by the devstack pytest plugin's fixtures and by the suites' conftests
(test modules cannot import conftest.py under importlib mode; they can import this package):
- tokens.py: key pairs and access tokens as auth issues them (`new_key`, `access_claims`, `mint`),
  and `Callers`, a suite's test users with their call metadata;
- peers.py: gRPC peers on real sockets: auth serving a JWKS (`serve_jwks`), and `ScriptedPeer`
  answering what a test scripted (`serve` puts one on a socket);
- apps.py: `AppRunner` starts an app's components in order and stops them all; the typed
  error a call failed with (`failure`, `stream_failure`);
- waits.py: a condition (`eventually`), Kafka records (`read_topic`), a mail (`wait_for_mail`);
- stores.py: a fresh PostgreSQL database (`fresh_database`), a Redis prefix wiped;
- webhooks.py: an HTTP endpoint receiving webhooks (`webhook_receiver`), failing at first if
  asked, that checks their signatures;
- processes.py: the local OIDC provider, a platform service (re)started from its fleet's spec,
  a writer process stopped inside its transaction;
- trusted_headers.py: a gRPC identity resolver believing unsigned headers (tests only: it
  lives here so that no service can configure it).
"""

from aether_devstack.testkit.apps import AppRunner, failure, stream_failure
from aether_devstack.testkit.peers import Call, JwksPeer, ScriptedPeer, serve, serve_jwks
from aether_devstack.testkit.processes import (
    OidcProvider,
    fleet_env,
    oidc_provider_process,
    replica_spec,
    service_process,
    start_fleet_process,
    writer_stopped_mid_transaction,
)
from aether_devstack.testkit.stores import delete_prefix, fresh_database, unique_name
from aether_devstack.testkit.tokens import (
    AUDIENCE,
    ISSUER,
    Callers,
    SigningKey,
    access_claims,
    bearer_metadata,
    ed25519_key,
    mint,
    new_key,
    rsa_key,
)
from aether_devstack.testkit.waits import (
    await_mail,
    eventually,
    latest_mail,
    mails_to,
    read_topic,
    wait_for_mail,
)
from aether_devstack.testkit.webhooks import WebhookReceiver, webhook_receiver

__all__ = [
    "AUDIENCE",
    "ISSUER",
    "AppRunner",
    "Call",
    "Callers",
    "JwksPeer",
    "OidcProvider",
    "ScriptedPeer",
    "SigningKey",
    "WebhookReceiver",
    "access_claims",
    "await_mail",
    "bearer_metadata",
    "delete_prefix",
    "ed25519_key",
    "eventually",
    "failure",
    "fleet_env",
    "fresh_database",
    "latest_mail",
    "mails_to",
    "mint",
    "new_key",
    "oidc_provider_process",
    "read_topic",
    "replica_spec",
    "rsa_key",
    "serve",
    "serve_jwks",
    "service_process",
    "start_fleet_process",
    "stream_failure",
    "unique_name",
    "wait_for_mail",
    "webhook_receiver",
    "writer_stopped_mid_transaction",
]
