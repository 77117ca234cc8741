-- +goose Up
-- Two FHIR servers of one tenant may use the same resource ids for
-- different resources: Appointment/123 of one EHR is not Appointment/123 of
-- another, nor is its Patient/7. A run of an appointment or an EOB, and a
-- contact read from a FHIR bundle, now belong to the source their event came
-- from: the subscription's registered FHIR source (subscriptions.source_id),
-- or, for a subscription registered without one, 'subscription/<id>' (a
-- source of its own; '/' never occurs in a source id). Subscriptions that
-- share a server should name the same source.

-- Runs: one per (workflow, source, subject). Patient-scoped runs (API events,
-- segments) have no source (''). Existing runs take their event's source.
ALTER TABLE runs ADD COLUMN source text NOT NULL DEFAULT '';
UPDATE runs r SET source = COALESCE(s.source_id, 'subscription/' || s.id)
    FROM events e JOIN subscriptions s ON s.id = e.subscription_id
    WHERE r.event_id = e.id AND r.subject NOT LIKE 'patient:%';
ALTER TABLE runs DROP CONSTRAINT runs_tenant_id_workflow_id_subject_key;
ALTER TABLE runs ADD CONSTRAINT runs_workflow_source_subject UNIQUE (tenant_id, workflow_id, source, subject);

-- Contacts: one registered through the API per patient (fhir_source ''),
-- which wins over every source's, and one per source read from its bundles.
-- A bundle's contact stored before this migration came from an unknown
-- source: it is kept for the tenant's only source when the tenant has one,
-- and otherwise dropped (the next bundle of each source stores it again;
-- the events keep what the bundles carried).
ALTER TABLE contacts ADD COLUMN fhir_source text NOT NULL DEFAULT '';
UPDATE contacts c SET fhir_source = t.source
    FROM (SELECT tenant_id, min(COALESCE(source_id, 'subscription/' || id)) AS source
          FROM subscriptions GROUP BY tenant_id
          HAVING count(DISTINCT COALESCE(source_id, 'subscription/' || id)) = 1) t
    WHERE c.tenant_id = t.tenant_id AND c.source = 'fhir';
DELETE FROM contacts WHERE source = 'fhir' AND fhir_source = '';
ALTER TABLE contacts DROP CONSTRAINT contacts_tenant_id_patient_index_key;
ALTER TABLE contacts ADD CONSTRAINT contacts_patient_source UNIQUE (tenant_id, patient_index, fhir_source);
ALTER TABLE contacts ADD CONSTRAINT contacts_fhir_source CHECK ((source = 'api') = (fhir_source = ''));

-- +goose Down
-- One contact per patient again: the API's, else the newest bundle's.
ALTER TABLE contacts DROP CONSTRAINT contacts_fhir_source;
ALTER TABLE contacts DROP CONSTRAINT contacts_patient_source;
DELETE FROM contacts c WHERE EXISTS (
    SELECT 1 FROM contacts o WHERE o.tenant_id = c.tenant_id AND o.patient_index = c.patient_index
        AND o.id <> c.id AND (o.source = 'api' OR (c.source <> 'api' AND o.id > c.id)));
ALTER TABLE contacts ADD CONSTRAINT contacts_tenant_id_patient_index_key UNIQUE (tenant_id, patient_index);
ALTER TABLE contacts DROP COLUMN fhir_source;
-- Runs of one subject from several sources keep their rows (notices point
-- at them): all but the first get the source appended to the subject.
UPDATE runs r SET subject = r.subject || ' (' || r.source || ')'
    WHERE EXISTS (SELECT 1 FROM runs o WHERE o.tenant_id = r.tenant_id AND o.workflow_id = r.workflow_id
        AND o.subject = r.subject AND o.id < r.id);
ALTER TABLE runs DROP CONSTRAINT runs_workflow_source_subject;
ALTER TABLE runs ADD CONSTRAINT runs_tenant_id_workflow_id_subject_key UNIQUE (tenant_id, workflow_id, subject);
ALTER TABLE runs DROP COLUMN source;
