-- Leases on background jobs shared by the instances of one database
-- (store.Tx.TakeLease): one row per job, overwritten by every take.
CREATE TABLE leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    held_until bigint NOT NULL     -- Unix milliseconds; free from then on
);
