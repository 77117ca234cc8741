-- +goose Up
-- SMS (issue 11). A contact may carry a phone number, sealed for its row
-- like the email, and found by its blind index when the provider posts a
-- STOP or START reply from it (the index is keyed, so the number is never
-- stored in clear). A delivery keeps the provider's latest status for its
-- message (delivered, undelivered, failed, ...) and the provider's id for
-- it, as its signed status callbacks report them; the callback names the
-- delivery by the random reference its message_id holds (chosen before
-- the message is handed over, so a callback that outruns the provider's
-- answer still finds it).
ALTER TABLE contacts
    ADD COLUMN phone_sealed bytea,
    ADD COLUMN phone_index text NOT NULL DEFAULT '';
CREATE INDEX contacts_phone_index ON contacts (phone_index) WHERE phone_index <> '';

ALTER TABLE deliveries
    ADD COLUMN provider_status text NOT NULL DEFAULT '',
    ADD COLUMN provider_message_id text NOT NULL DEFAULT '',
    ADD COLUMN provider_status_at timestamptz;
CREATE INDEX deliveries_sms_message ON deliveries (message_id) WHERE channel = 'sms' AND message_id <> '';

-- +goose Down
DROP INDEX deliveries_sms_message;
ALTER TABLE deliveries DROP COLUMN provider_status_at, DROP COLUMN provider_message_id, DROP COLUMN provider_status;
DROP INDEX contacts_phone_index;
ALTER TABLE contacts DROP COLUMN phone_index, DROP COLUMN phone_sealed;
