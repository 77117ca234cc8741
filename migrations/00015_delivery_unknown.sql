-- +goose Up
-- A delivery whose outcome cannot be known: the relay's reply to DATA was
-- lost, or the process died while the delivery was "sending". It is never
-- retried on its own; an operator resolves it (tidings deliveries resolve).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('sending', 'sent', 'failed', 'unknown'));
-- The operator's list, and the reconciler's look for attempts that never
-- finished: both small, so partial.
CREATE INDEX deliveries_unknown ON deliveries (tenant_id, updated_at) WHERE status = 'unknown';
CREATE INDEX deliveries_sending ON deliveries (updated_at) WHERE status = 'sending';

-- +goose Down
DROP INDEX deliveries_sending;
DROP INDEX deliveries_unknown;
-- "sending" with attempts is how an unknown outcome looked before.
UPDATE deliveries SET status = 'sending' WHERE status = 'unknown';
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('sending', 'sent', 'failed'));
