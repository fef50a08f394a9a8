"""Builds a Qdrant Edge shard's indexes (HNSW, merged segments) in its own process:
`python -m aether_memory.edge_build <shard directory> [niceness]`. edge_index.py runs it on a
copy of a live shard, since optimize() holds the calling process, GIL included, until done."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import qdrant_edge as edge

PR_SET_PDEATHSIG = 1


def main(path: str, niceness: int = 0) -> None:
    if sys.platform == "linux":  # die with the service: a restart deletes unfinished builds
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.nice(niceness)
    shard = edge.EdgeShard.load(path)
    try:
        shard.optimize()
        shard.flush()
    finally:
        shard.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
