-- A counter that every transaction changing who may use a token bumps (a
-- session ended, a pair revoked, a user deactivated, pairs deleted), so
-- that caches of token validity, in this process or another, can tell
-- with one tiny read whether they are still right. A row, not a sequence:
-- a sequence would move before the transaction commits, and a cache could
-- then store what it read before the commit under the new number.
CREATE TABLE token_epoch (
    id integer PRIMARY KEY CHECK (id = 1),
    n  bigint NOT NULL
);
INSERT INTO token_epoch (id, n) VALUES (1, 0);
