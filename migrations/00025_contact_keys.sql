-- +goose Up
-- A patient's encryption key, registered through the contacts API: an
-- S/MIME certificate (PEM) or an OpenPGP public key (armored). With a
-- usable key the email channel sends the whole notice encrypted for it.
-- The key names the patient (a certificate's subject and address, a
-- user id), so it is sealed by the application like the addresses, bound
-- to the row's patient_index. The kind is in clear: it says only which
-- of the two standards the patient uses.
ALTER TABLE contacts
    ADD COLUMN encryption_key_sealed bytea,
    ADD COLUMN encryption_key_kind   text NOT NULL DEFAULT ''
        CHECK (encryption_key_kind IN ('', 'smime', 'openpgp'));

-- +goose Down
ALTER TABLE contacts DROP COLUMN encryption_key_kind, DROP COLUMN encryption_key_sealed;
