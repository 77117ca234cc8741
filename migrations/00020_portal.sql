-- +goose Up
-- Portal pickup: the notice link (/portal/{tenant}/notices/{token}) opens a
-- page where the patient proves who they are and then reads the notice with
-- the detail the policy allowed on the authenticated portal.

-- The portal's view of a notice, decided when the notice is sent: the
-- payload the policy allowed on the portal, the address of record the
-- one-time code goes to, the language, the birth date and the patient and
-- subject the portal.viewed event names. Sealed for its row (tenant,
-- portal_token) like payload_sealed; NULL for notices sent before this
-- version, which the portal cannot show.
ALTER TABLE notices ADD COLUMN portal_sealed bytea;

-- The decision log names the channel each decision was for: a sent notice
-- now has two, its email's (linked to the delivery) and its portal's.
ALTER TABLE policy_decisions ADD COLUMN channel text NOT NULL DEFAULT '';

-- How a tenant's patients prove who they are at the portal: a one-time code
-- mailed to the address of record, their date of birth, or both.
ALTER TABLE tenants ADD COLUMN portal_verification text NOT NULL DEFAULT 'code'
    CHECK (portal_verification IN ('code', 'birth_date', 'code_and_birth_date'));

-- One row per notice that someone tried to open: the current one-time code
-- (only its keyed hash), the failed proofs and the lock they lead to.
CREATE TABLE portal_access (
    notice_id        bigint PRIMARY KEY REFERENCES notices(id),
    tenant_id        text NOT NULL REFERENCES tenants(id),
    -- seal.BlindIndex of the code bound to the notice; never the code.
    code_hash        text,
    code_expires_at  timestamptz,
    code_attempts    int NOT NULL DEFAULT 0,
    codes_sent       int NOT NULL DEFAULT 0,
    last_code_at     timestamptz,
    -- Wrong codes or birth dates since the last success or lock.
    failures         int NOT NULL DEFAULT 0,
    locked_until     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- A patient's session after proving who they are: the cookie holds a random
-- value, the row only its SHA-256.
CREATE TABLE portal_sessions (
    id_hash     text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants(id),
    notice_id   bigint NOT NULL REFERENCES notices(id),
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at);

-- +goose Down
DROP TABLE portal_sessions;
DROP TABLE portal_access;
ALTER TABLE tenants DROP COLUMN portal_verification;
ALTER TABLE policy_decisions DROP COLUMN channel;
ALTER TABLE notices DROP COLUMN portal_sealed;
