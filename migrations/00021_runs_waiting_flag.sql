-- +goose Up
-- Every index of waiting runs was partial on status = 'waiting'. Before
-- ANALYZE has seen rows (a fresh deployment under its first burst, a table
-- that grew from empty within a minute) the planner guesses that an
-- equality on a text column keeps 0.5% of the rows, so each of these partial
-- indexes looked like a few dozen rows: scanning all of one and hashing it
-- looked cheaper than probing by id or subject, and every batch's runs
-- updates walked every waiting run (20,000 of them late in a 20,000-notice
-- load run; the rate fell as the table grew). A boolean's unmeasured
-- selectivity is one half, so indexes partial on this flag are priced near
-- their real size before any statistics exist, and measured after. Queries
-- must say "waiting", not status = 'waiting', to use them. The patient
-- index carries the subject too: a lookup of a patient's runs by subject
-- (the wake-up of runs waiting for "delivered") is then a probe whichever
-- index the planner picks, not a walk of all the patient's runs.
ALTER TABLE runs ADD COLUMN waiting boolean NOT NULL GENERATED ALWAYS AS (status = 'waiting') STORED;
DROP INDEX runs_due;
DROP INDEX runs_unpromoted;
DROP INDEX runs_subject;
DROP INDEX runs_patient;
DROP INDEX runs_waiting_for;
CREATE INDEX runs_due ON runs (due_at) WHERE waiting AND due_at IS NOT NULL;
CREATE INDEX runs_unpromoted ON runs (due_at) WHERE waiting AND promoted_seq <> wake_seq;
CREATE INDEX runs_subject ON runs (subject, tenant_id) WHERE waiting;
CREATE INDEX runs_patient ON runs (patient_index, tenant_id, subject) WHERE waiting;
CREATE INDEX runs_waiting_for ON runs USING gin ((state -> 'waiting_for') jsonb_path_ops) WHERE waiting;

-- +goose Down
DROP INDEX runs_due;
DROP INDEX runs_unpromoted;
DROP INDEX runs_subject;
DROP INDEX runs_patient;
DROP INDEX runs_waiting_for;
CREATE INDEX runs_due ON runs (due_at) WHERE status = 'waiting' AND due_at IS NOT NULL;
CREATE INDEX runs_unpromoted ON runs (due_at) WHERE status = 'waiting' AND promoted_seq <> wake_seq;
CREATE INDEX runs_subject ON runs (subject, tenant_id) WHERE status = 'waiting';
CREATE INDEX runs_patient ON runs (patient_index, tenant_id) WHERE status = 'waiting';
CREATE INDEX runs_waiting_for ON runs USING gin ((state -> 'waiting_for') jsonb_path_ops) WHERE status = 'waiting';
ALTER TABLE runs DROP COLUMN waiting;
