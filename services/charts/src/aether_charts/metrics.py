"""The charts service's own Prometheus metrics (RED per RPC comes from aether_common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# outcome: drawn (rendered and stored), cached (the same picture was stored already).
CHART_IMAGES = Counter(
    "aether_charts_images_total", "Chart images asked for (RenderChart)", ["outcome"]
)
RENDER_DURATION = Histogram(
    "aether_charts_render_duration_seconds",
    "Drawing one chart image in a worker process (waiting for a free worker included)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
# The live feed (replay.py, feed.py).
REPLAYED = Counter(
    "aether_charts_replay_events_total", "Ticks and closed bars the replayer wrote to the outbox"
)
# kind: tick, bar; outcome: published, failed (Redis away: the frame is lost, the feed goes on).
STREAM_FRAMES = Counter(
    "aether_charts_stream_frames_total",
    "Live frames published for the gateway's market stream",
    ["kind", "outcome"],
)
# outcome: stored (a real price updated its bar), replayed (not stored: already history),
# late (amended a bar that had closed).
FEED_TICKS = Counter("aether_charts_feed_ticks_total", "Ticks consumed", ["outcome"])
# rpc: candles, indicators; outcome: l1, l2 (hits), miss, unsettled (answered, not kept: it
# reaches into the bar a feed is building).
CACHE = Counter(
    "aether_charts_cache_total", "Cached answers looked up (cache.py)", ["rpc", "outcome"]
)

# The archive (archive.py): bars moved out of PostgreSQL, and archived objects that queries read.
ARCHIVED_BARS = Counter(
    "aether_charts_archived_bars_total", "Bars moved from PostgreSQL to the S3 archive"
)
# outcome: fetched (from S3), cached (kept in memory from an earlier request).
ARCHIVE_READS = Counter(
    "aether_charts_archive_reads_total",
    "Archived (symbol, year) objects read to answer a query that reaches into the archive",
    ["outcome"],
)
