-- +goose Up
-- Bounces (issue 11). A relay's delivery status notification names the
-- bounced message by its Message-ID: deliveries are found by it. A
-- permanent failure marks the delivery bounced, and after
-- TIDINGS_BOUNCE_SUPPRESS_AFTER of them (default 2) the address of record
-- is suppressed on the contact rows that send to it, until the contact is
-- registered again through the API.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('sending', 'sent', 'failed', 'unknown', 'bounced'));
CREATE INDEX deliveries_message_id ON deliveries (tenant_id, message_id) WHERE message_id <> '';
ALTER TABLE contacts
    ADD COLUMN email_hard_bounces int NOT NULL DEFAULT 0 CHECK (email_hard_bounces >= 0),
    ADD COLUMN email_suppressed_at timestamptz;

-- +goose Down
ALTER TABLE contacts DROP COLUMN email_suppressed_at, DROP COLUMN email_hard_bounces;
DROP INDEX deliveries_message_id;
UPDATE deliveries SET status = 'sent' WHERE status = 'bounced';
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('sending', 'sent', 'failed', 'unknown'));
