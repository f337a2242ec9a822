-- The display name a client gave its Matrix device when it signed in
-- (the legacy login's initial_device_display_name), for the account page.
ALTER TABLE sessions ADD COLUMN device_name text NOT NULL DEFAULT '';
