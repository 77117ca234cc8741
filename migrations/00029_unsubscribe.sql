-- +goose Up
-- One-click unsubscribe (RFC 8058): a patient's opt-out of one purpose of
-- notices (marketing), set from the link in a marketing mail. It is kept
-- by the patient's blind index, as runs and engagements are (every index
-- version is probed), so it holds for every contact of the patient; the
-- policy sees it as
-- contact.opted_out_purposes.
CREATE TABLE purpose_opt_outs (
    tenant_id     text NOT NULL REFERENCES tenants(id),
    patient_index text NOT NULL,
    purpose       text NOT NULL CHECK (purpose IN ('marketing')),
    -- The patient reference, sealed for (tenant, purpose, patient_index), so
    -- that tidings keys reindex can move the row to a new index version.
    patient_sealed bytea,
    -- The notice whose link set it (no foreign key: notices may be purged
    -- before the opt-out is).
    notice_id     bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, patient_index, purpose)
);

-- A marketing notice is a disclosure like any other, made for marketing
-- (HIPAA 164.508(a)(3), with the patient's authorization).
ALTER TABLE disclosures DROP CONSTRAINT disclosures_purpose_check;
ALTER TABLE disclosures ADD CONSTRAINT disclosures_purpose_check
    CHECK (purpose IN ('payment', 'treatment', 'operations', 'marketing'));

-- +goose Down
ALTER TABLE disclosures DROP CONSTRAINT disclosures_purpose_check;
ALTER TABLE disclosures ADD CONSTRAINT disclosures_purpose_check
    CHECK (purpose IN ('payment', 'treatment', 'operations'));
DROP TABLE purpose_opt_outs;
