-- +goose Up
-- What an event means (for an Appointment: booked, rescheduled, cancelled,
-- fulfilled, noshow, entered-in-error, other), derived by the worker from the
-- resource and the previous version Tidings saw; and the key a source signs
-- its notifications with.
ALTER TABLE events ADD COLUMN kind text NOT NULL DEFAULT '';
CREATE INDEX events_resource ON events (tenant_id, resource_type, resource_id, id);
ALTER TABLE subscriptions ADD COLUMN hmac_key_sealed bytea;

-- +goose Down
ALTER TABLE subscriptions DROP COLUMN hmac_key_sealed;
DROP INDEX events_resource;
ALTER TABLE events DROP COLUMN kind;
