-- +goose Up
-- Workers claim events from Postgres in batches (SELECT … FOR UPDATE SKIP
-- LOCKED) instead of receiving one Redis task per event: an event needs no
-- queue to be processed, and a claim that is not finished within its lease
-- (the worker died) is taken again. attempts counts failed tries; after the
-- last one the event is given up, visibly, on its notice.
ALTER TABLE events
    ADD COLUMN claimed_until timestamptz,
    ADD COLUMN attempts int NOT NULL DEFAULT 0,
    ADD COLUMN last_error text NOT NULL DEFAULT '';
-- Event outbox rows are no longer written; those left are handed over by
-- the claim itself.
UPDATE outbox SET enqueued_at = now() WHERE event_id IS NOT NULL AND enqueued_at IS NULL;

-- The decision log is linked to its delivery by notice (BeginDelivery).
CREATE INDEX policy_decisions_notice ON policy_decisions (notice_id);

-- +goose Down
DROP INDEX policy_decisions_notice;
ALTER TABLE events DROP COLUMN last_error, DROP COLUMN attempts, DROP COLUMN claimed_until;
