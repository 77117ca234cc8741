-- +goose Up
-- What a patient asked for (HIPAA 164.522): channels opted out of, a
-- confidential-communication address, agreed restrictions, marketing
-- authorization and an alternate format. The confidential address is PHI and
-- sealed by the application like the main one.
ALTER TABLE contacts
    -- Comma-separated tokens (validated by the API: channel names, restriction names).
    ADD COLUMN opted_out_channels       text NOT NULL DEFAULT '',
    ADD COLUMN confidential_email_sealed bytea,
    ADD COLUMN restrictions             text NOT NULL DEFAULT '',
    ADD COLUMN marketing_authorized     boolean NOT NULL DEFAULT false,
    ADD COLUMN alternate_format         text NOT NULL DEFAULT '';

-- The decision log links each decision to the delivery it governed.
-- It also keeps what the decision obliged, to prove later it was applied.
ALTER TABLE policy_decisions
    ADD COLUMN delivery_id bigint REFERENCES deliveries(id),
    ADD COLUMN redact jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN obligations jsonb NOT NULL DEFAULT '[]';

-- +goose Down
ALTER TABLE policy_decisions DROP COLUMN obligations, DROP COLUMN redact, DROP COLUMN delivery_id;
ALTER TABLE contacts
    DROP COLUMN alternate_format,
    DROP COLUMN marketing_authorized,
    DROP COLUMN restrictions,
    DROP COLUMN confidential_email_sealed,
    DROP COLUMN opted_out_channels;
