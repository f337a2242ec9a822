-- A counter that every transaction changing who may use a token bumps (a
-- session ended, a pair revoked, a user deactivated, pairs deleted), so
-- that caches of token validity, in this process or another, can tell
-- with one tiny read whether they are still right.
CREATE TABLE token_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO token_epoch (id, n) VALUES (1, 0);
