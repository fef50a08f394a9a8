"""The local MongoDB-protocol server (secantusdb) with MongoDB's transaction lifetime bound set.

A writer that dies or stops inside a transaction leaves it open on the server, holding its
documents, until the server's transaction lifetime runs out (`transactionLifetimeLimitSeconds`,
60 s by default in MongoDB and in secantusdb). Production sets it to TRANSACTION_LIFETIME_S
(docs/operations.md); secantusdb has no flag or setParameter for it, only its server's
constructor argument, so this starts its command line with that argument in place.

    python -m aether_devstack.mongo_server <secantusd-py's arguments>
"""

from __future__ import annotations

import functools

from secantus import cli
from secantus.server import SecantusDBServer

# Seconds an idle transaction stays open on the server: ours take milliseconds; a writer
# stopped inside one then holds its documents (a chat room's counter) this long at most.
TRANSACTION_LIFETIME_S = 3.0


def main() -> int:
    cli.SecantusDBServer = functools.partial(
        SecantusDBServer, transaction_lifetime_seconds=TRANSACTION_LIFETIME_S
    )
    return int(cli.main())


if __name__ == "__main__":
    raise SystemExit(main())
