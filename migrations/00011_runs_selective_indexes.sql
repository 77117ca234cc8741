-- +goose Up
-- The waiting runs of a subject and of a patient were indexed tenant first.
-- One tenant holds most runs and one patient can have thousands of waiting
-- runs, whose patient_index values B-tree deduplication packs into a tiny
-- index. With statistics taken while the table was small (a fresh
-- deployment under its first burst), the planner priced both indexes at one
-- row and chose the smaller, patient one for a lookup by subject: every
-- batch's refresh walked all of that patient's waiting runs, 0.5 to 0.9 s a
-- statement in a 20,000-notice load run. Leading with the selective column
-- leaves a lookup by subject no patient index to mistake for it.
DROP INDEX runs_subject;
DROP INDEX runs_patient;
CREATE INDEX runs_subject ON runs (subject, tenant_id) WHERE status = 'waiting';
CREATE INDEX runs_patient ON runs (patient_index, tenant_id) WHERE status = 'waiting';

-- +goose Down
DROP INDEX runs_subject;
DROP INDEX runs_patient;
CREATE INDEX runs_subject ON runs (tenant_id, subject) WHERE status = 'waiting';
CREATE INDEX runs_patient ON runs (tenant_id, patient_index) WHERE status = 'waiting';
