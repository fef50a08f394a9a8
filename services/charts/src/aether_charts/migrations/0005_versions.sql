-- The version of an instrument's bars (cache.py): raised in the transaction of every write that
-- can change a closed bar or the first open one, so cached answers of an older version are
-- never served again.
ALTER TABLE instruments ADD COLUMN version bigint NOT NULL DEFAULT 0;
