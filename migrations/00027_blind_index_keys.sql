-- +goose Up
-- Blind indexes per tenant, with a key version. A patient_index made from
-- now on names the version of the tenant's index key ("v2:…"); one made
-- before has no prefix (version 0: the one global key, still probed while
-- index key version 1 is configured). SQL cannot compute the keyed
-- hashes, so no existing index changes here: `tidings keys reindex`
-- rewrites rows of older versions to the tenant's current one, in pages.
--
-- Re-keying a row needs its patient reference. Runs hold it in their
-- sealed facts and segment members in patient_sealed; contacts,
-- engagements and disclosures get a patient_sealed column, written on
-- every insert, sealed for the row's (tenant, patient_index): moved to a
-- row of another patient it does not open. Rows written before have none;
-- reindex takes their reference from another row of the same patient in
-- the tenant that has one, and leaves (and counts) those it cannot.
ALTER TABLE contacts ADD COLUMN patient_sealed bytea;
ALTER TABLE engagements ADD COLUMN patient_sealed bytea;
ALTER TABLE disclosures ADD COLUMN patient_sealed bytea;

-- The service may re-seal the patient reference (tidings keys rotate) as
-- it may the recipient; re-keying patient_index (tidings keys reindex)
-- runs as the owner, like the purge.
GRANT UPDATE (patient_sealed) ON disclosures TO tidings_app;

-- +goose Down
REVOKE UPDATE (patient_sealed) ON disclosures FROM tidings_app;
ALTER TABLE disclosures DROP COLUMN patient_sealed;
ALTER TABLE engagements DROP COLUMN patient_sealed;
ALTER TABLE contacts DROP COLUMN patient_sealed;
