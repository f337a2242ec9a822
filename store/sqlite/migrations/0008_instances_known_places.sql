-- Every devicegrantd instance that shares this database records here that
-- it is alive (Run does, every few seconds), and divides each rate limit
-- by the number of instances heard from lately: N instances behind a load
-- balancer then allow, together, what one would, instead of N times each
-- budget. Rows of instances long gone are deleted by the cleanup.
CREATE TABLE instances (
    id      TEXT PRIMARY KEY,
    seen_at INTEGER NOT NULL
);

-- Where each account signed in from successfully lately (a client address,
-- an IPv6 /64): tries from there count against a budget of the account's
-- own, so that strangers' wrong passwords cannot lock the owner out. In the
-- database, not in memory, so that every instance knows the owner's places
-- and a restart forgets none. Only a successful sign-in writes a row, one
-- per account and place, and each account keeps only its most recent
-- places, so what strangers can make us store is bounded by the accounts
-- they hold.
CREATE TABLE known_places (
    user_id TEXT NOT NULL REFERENCES users(id),
    place   TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, place)
);
CREATE INDEX known_places_seen ON known_places(seen_at);
