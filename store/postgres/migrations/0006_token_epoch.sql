-- A counter that every transaction changing who may use a token bumps (a
-- session ended, a pair revoked, a user deactivated, pairs deleted), so
-- that caches of token validity, in this process or another, can tell
-- with one tiny read whether they are still right.
--
-- Rows, not a sequence: a sequence moves before the transaction commits,
-- and a cache could then store what it read before the commit under the
-- new number. Not one row as in SQLite but 64 stripes, a bump adding one to
-- a random stripe and the epoch being their sum: under SERIALIZABLE, two
-- transactions that update one row at the same time cannot both commit,
-- so with a single row every concurrent revocation would abort all others
-- but one, and enough of them at once would exhaust Update's retries. The
-- sum grows by exactly one for each committed bump, as the single row did.
CREATE TABLE token_epoch (
    stripe integer PRIMARY KEY CHECK (stripe >= 0 AND stripe < 64),
    n      bigint NOT NULL
);
INSERT INTO token_epoch (stripe, n) SELECT s, 0 FROM generate_series(0, 63) AS s;
