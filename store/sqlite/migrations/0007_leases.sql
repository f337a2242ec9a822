-- Leases on background jobs shared by the processes of one database
-- (store.Tx.TakeLease): one row per job, overwritten by every take.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    held_until INTEGER NOT NULL     -- Unix milliseconds; free from then on
);
