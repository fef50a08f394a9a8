-- The archive of old bars (archive.py; services/charts/README.md, "Retention and the archive").
--
-- One row per (symbol, UTC year) whose bars left `bars` for one Parquet object in the archive
-- bucket. The row commits in the same transaction that deletes those bars, after the object
-- was written and read back, so a bar is always in `bars`, in a recorded object, or both.
CREATE TABLE bars_archive (
    symbol      text        NOT NULL REFERENCES instruments (symbol),
    year        integer     NOT NULL,
    -- The object's key in CHARTS_ARCHIVE_BUCKET: market-archive/bars/<symbol>/<year>.parquet
    key         text        NOT NULL,
    rows        integer     NOT NULL CHECK (rows > 0),
    first_time  timestamptz NOT NULL,
    last_time   timestamptz NOT NULL,
    -- Of the object's bytes: a reader refuses an object that is not the one recorded.
    sha256      text        NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, year),
    CHECK (first_time <= last_time)
);
