-- Rollups (repository.py, bars.ROLLUPS): hourly and daily candles kept ready for instruments
-- stored finer, so that a multi-year daily chart of minute bars reads one row per day. Written
-- with the bars: an import aggregates again the buckets it touched, a real tick updates its
-- bucket like its bar. Daily rollups are local days of the instrument's zone (they nest in its
-- weeks and months); hourly ones lie on the UTC grid (they nest in 4-hour candles).
-- TimescaleDB: continuous aggregates on the `bars` hypertable would replace this table.
CREATE TABLE bar_rollups (
    symbol   text             NOT NULL,
    interval text             NOT NULL CHECK (interval IN ('1h', '1d')),
    time     timestamptz      NOT NULL,
    open     double precision NOT NULL,
    high     double precision NOT NULL,
    low      double precision NOT NULL,
    close    double precision NOT NULL,
    volume   double precision NOT NULL,
    PRIMARY KEY (symbol, interval, time)
);

-- What is stored already (databases from before the rollups).
INSERT INTO bar_rollups (symbol, interval, time, open, high, low, close, volume)
SELECT b.symbol, '1h', date_bin('1 hour', b.time, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
       (array_agg(b.open ORDER BY b.time))[1], max(b.high), min(b.low),
       (array_agg(b.close ORDER BY b.time DESC))[1], sum(b.volume)
FROM bars b JOIN instruments i USING (symbol)
WHERE i.resolution IN ('1m', '5m', '15m')
GROUP BY 1, 2, 3;
INSERT INTO bar_rollups (symbol, interval, time, open, high, low, close, volume)
SELECT b.symbol, '1d', date_trunc('day', b.time, i.timezone),
       (array_agg(b.open ORDER BY b.time))[1], max(b.high), min(b.low),
       (array_agg(b.close ORDER BY b.time DESC))[1], sum(b.volume)
FROM bars b JOIN instruments i USING (symbol)
WHERE i.resolution IN ('1m', '5m', '15m', '1h', '4h')
GROUP BY 1, 2, 3;
