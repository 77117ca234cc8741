-- +goose Up
-- The reconciler looks for fetches still pending after a lease (their task
-- may have been lost from Redis) on every pass: only the pending ones.
CREATE INDEX fetches_pending ON fetches (updated_at) WHERE status = 'pending';

-- +goose Down
DROP INDEX fetches_pending;
