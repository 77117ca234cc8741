-- +goose Up
-- Engagement events wake the runs waiting for them. A patient can have
-- thousands of waiting runs (an EOB's waits for a portal view for a week),
-- and the "delivered" of every notice sent looks for runs waiting for it:
-- finding them by what they wait for, not by walking the patient's runs.
CREATE INDEX runs_waiting_for ON runs USING gin ((state -> 'waiting_for') jsonb_path_ops) WHERE status = 'waiting';

-- +goose Down
DROP INDEX runs_waiting_for;
