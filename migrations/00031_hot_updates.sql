-- +goose Up
-- Two of the updates every notice makes can be HOT (heap-only: the new row
-- version stays on its page and no index gets an entry) when no index
-- holds a column they change and the page has room:
--   - the claim of an event (claimed_until, which no index holds: it
--     lacked only the room);
--   - the hand-over of a delivery to the relay (attempts, updated_at: two
--     partial indexes held updated_at).
-- A load run measured six updates per notice, 0.33 of them HOT: each of
-- the others entered every index of its table (six on events and on
-- deliveries) as an insert does.
--
-- Pages are left a fifth empty for those row versions (fillfactor; it
-- applies to pages filled from now on).
ALTER TABLE events SET (fillfactor = 80);
ALTER TABLE deliveries SET (fillfactor = 80);
-- No query reads events by tenant and received_at (the per-subscription
-- index serves the subscription report); dropping it saves an entry per
-- insert and per non-HOT update, not a HOT update.
DROP INDEX events_tenant_received;
-- The sweeps of deliveries left "sending" and the list of unknown ones
-- filter and order by updated_at among the few rows in those states; the
-- indexes need not hold it.
DROP INDEX deliveries_sending;
CREATE INDEX deliveries_sending ON deliveries (id) WHERE status = 'sending';
DROP INDEX deliveries_unknown;
CREATE INDEX deliveries_unknown ON deliveries (tenant_id, id) WHERE status = 'unknown';

-- +goose Down
DROP INDEX deliveries_unknown;
CREATE INDEX deliveries_unknown ON deliveries (tenant_id, updated_at) WHERE status = 'unknown';
DROP INDEX deliveries_sending;
CREATE INDEX deliveries_sending ON deliveries (updated_at) WHERE status = 'sending';
CREATE INDEX events_tenant_received ON events (tenant_id, received_at);
ALTER TABLE deliveries RESET (fillfactor);
ALTER TABLE events RESET (fillfactor);
