-- P-DCR-6: identical public-client registrations share one client. The
-- hash is of the registered metadata as rendered; confidential clients
-- (with a secret) leave it NULL and are never shared.
ALTER TABLE clients ADD COLUMN metadata_hash bytea;
CREATE INDEX clients_metadata_hash ON clients(metadata_hash) WHERE metadata_hash IS NOT NULL;
