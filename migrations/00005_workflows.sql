-- +goose Up
-- Notification workflows. Postgres holds every run's state; Redis holds only
-- wake-ups, derived from runs.due_at and runs.wake_seq, so losing Redis loses
-- no run. Definitions and run states hold no PHI (step ids, event types,
-- times of waits); what a run knows about its subject (an appointment's time)
-- is sealed by the application in runs.facts_sealed.

CREATE TABLE workflows (
    tenant_id    text NOT NULL REFERENCES tenants(id),
    id           text NOT NULL CHECK (id ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    status       text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'paused')),
    -- The latest version; new runs start on it, running runs keep theirs.
    version      int NOT NULL,
    -- "event:appointment.booked", "api:portal.login", "segment:<name>".
    trigger_key  text NOT NULL,
    priority     text NOT NULL DEFAULT 'normal' CHECK (priority IN ('high', 'normal', 'low')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX workflows_trigger ON workflows (tenant_id, trigger_key) WHERE status = 'active';

CREATE TABLE workflow_versions (
    tenant_id    text NOT NULL,
    workflow_id  text NOT NULL,
    version      int NOT NULL,
    definition   jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow_id, version),
    FOREIGN KEY (tenant_id, workflow_id) REFERENCES workflows (tenant_id, id)
);

CREATE TABLE runs (
    id                 bigserial PRIMARY KEY,
    tenant_id          text NOT NULL,
    workflow_id        text NOT NULL,
    workflow_version   int NOT NULL,
    -- "Appointment/<id>", "ExplanationOfBenefit/<id>" (technical ids, as in
    -- events.resource_id), or "patient:<blind index>" for patient-scoped runs.
    subject            text NOT NULL,
    -- Keyed hash of the patient reference: engagement events find runs by it.
    patient_index      text NOT NULL,
    -- The subject's latest event: notices are built from it.
    event_id           bigint REFERENCES events(id),
    status             text NOT NULL CHECK (status IN ('waiting', 'ended')),
    step               text NOT NULL DEFAULT '',
    state              jsonb NOT NULL DEFAULT '{}',
    facts_sealed       bytea,
    facts_changed      boolean NOT NULL DEFAULT false,
    -- Next wake-up; NULL while the run waits only for an event, or has ended.
    due_at             timestamptz,
    -- Bumped whenever the run is saved; a wake-up task names the seq it was
    -- enqueued for, and a stale one does nothing.
    wake_seq           bigint NOT NULL DEFAULT 0,
    -- The wake_seq last handed to Asynq (-1: never).
    promoted_seq       bigint NOT NULL DEFAULT -1,
    -- The last engagements.id this run has been told about.
    engagement_cursor  bigint NOT NULL DEFAULT 0,
    -- Actions the step machine decided and that are not all done yet (sends,
    -- segment joins, workflow starts): saved with the state they lead to,
    -- before any is carried out, so a cancellation that commits first wins
    -- and a crash mid-way re-drives them (each is idempotent).
    pending            jsonb NOT NULL DEFAULT '[]',
    -- Failed attempts at the pending actions; retries back off in Postgres.
    attempts           int NOT NULL DEFAULT 0,
    priority           text NOT NULL DEFAULT 'normal',
    outcome            text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    ended_at           timestamptz,
    -- One run per (workflow, subject), and no re-entry after it ends.
    UNIQUE (tenant_id, workflow_id, subject),
    FOREIGN KEY (tenant_id, workflow_id) REFERENCES workflows (tenant_id, id)
);
CREATE INDEX runs_due ON runs (due_at) WHERE status = 'waiting' AND due_at IS NOT NULL;
-- Wake-ups not yet handed to the queue: the scheduler's promotion scan.
CREATE INDEX runs_unpromoted ON runs (due_at) WHERE status = 'waiting' AND promoted_seq <> wake_seq;
CREATE INDEX runs_event ON runs (event_id);
CREATE INDEX runs_subject ON runs (tenant_id, subject) WHERE status = 'waiting';
CREATE INDEX runs_patient ON runs (tenant_id, patient_index) WHERE status = 'waiting';
CREATE INDEX runs_workflow_step ON runs (tenant_id, workflow_id, status, step);

-- A run's path: one row per step executed, with what ended it when it waited.
CREATE TABLE run_steps (
    run_id      bigint NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq         int NOT NULL,
    tenant_id   text NOT NULL,
    workflow_id text NOT NULL,
    step        text NOT NULL,
    happened    text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, step)
);
CREATE INDEX run_steps_workflow ON run_steps (tenant_id, workflow_id, step);

-- Engagement and API events (delivered, opened, clicked, portal.viewed,
-- unsubscribed, portal.login, ...). The event's data may be PHI: sealed.
CREATE TABLE engagements (
    id             bigserial PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants(id),
    patient_index  text NOT NULL,
    type           text NOT NULL CHECK (type ~ '^[a-z0-9][a-z0-9_.:-]{0,63}$'),
    -- The EOB or appointment it is about ("ExplanationOfBenefit/<id>"), when
    -- the sender knows: then only that subject's runs take it.
    subject        text,
    data_sealed    bytea,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX engagements_patient ON engagements (tenant_id, patient_index, id);

CREATE TABLE segment_members (
    tenant_id      text NOT NULL REFERENCES tenants(id),
    segment        text NOT NULL CHECK (segment ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    patient_index  text NOT NULL,
    -- The patient reference, sealed: a segment run needs it to find the contact.
    patient_sealed bytea NOT NULL,
    added_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, segment, patient_index)
);

-- A workflow's notices: one per (run, step), so a retried or duplicated
-- wake-up never sends twice (deliveries stay unique per notice and channel).
ALTER TABLE notices
    ADD COLUMN run_id bigint REFERENCES runs(id),
    ADD COLUMN step text,
    ADD COLUMN template text NOT NULL DEFAULT '';
ALTER TABLE notices DROP CONSTRAINT notices_event_id_notice_type_key;
CREATE UNIQUE INDEX notices_event_type ON notices (event_id, notice_type) WHERE run_id IS NULL;
CREATE UNIQUE INDEX notices_run_step ON notices (run_id, step) WHERE run_id IS NOT NULL;
CREATE INDEX notices_event ON notices (event_id);

-- When the worker finished with an event (whatever the outcome). An event
-- handed to Redis and not processed long after is re-enqueued by the
-- reconciler: Redis may have lost it (FLUSHALL, a failover without AOF).
-- Events stored before this migration count as processed; the default
-- fills them without rewriting the table, and new events start NULL.
ALTER TABLE events ADD COLUMN processed_at timestamptz DEFAULT '-infinity';
ALTER TABLE events ALTER COLUMN processed_at DROP DEFAULT;
CREATE INDEX events_unprocessed ON events (id) WHERE processed_at IS NULL;

-- +goose Down
DROP INDEX events_unprocessed;
ALTER TABLE events DROP COLUMN processed_at;
DROP INDEX notices_event;
DROP INDEX notices_run_step;
DROP INDEX notices_event_type;
DELETE FROM policy_decisions WHERE notice_id IN (SELECT id FROM notices WHERE run_id IS NOT NULL);
DELETE FROM deliveries WHERE notice_id IN (SELECT id FROM notices WHERE run_id IS NOT NULL);
DELETE FROM notices WHERE run_id IS NOT NULL;
ALTER TABLE notices DROP COLUMN template, DROP COLUMN step, DROP COLUMN run_id;
ALTER TABLE notices ADD CONSTRAINT notices_event_id_notice_type_key UNIQUE (event_id, notice_type);
DROP TABLE segment_members;
DROP TABLE engagements;
DROP TABLE run_steps;
DROP TABLE runs;
DROP TABLE workflow_versions;
DROP TABLE workflows;
