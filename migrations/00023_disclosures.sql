-- +goose Up
-- The accounting of disclosures (HIPAA 45 CFR 164.528): one row per notice
-- that went out (a mail the relay took, or one whose outcome is unknown and
-- may have gone out) and, later, per portal view. It says when, to whom
-- (the channel, and the address sealed for its row), what kind of content
-- (the notice type and how much of it: never the content), why (payment,
-- treatment, operations) and which notice and delivery. The patient is
-- only the blind index the contacts and runs use; the reference is never
-- stored in clear.
--
-- No foreign keys: a disclosure must outlive its notice, delivery and
-- run for the retention period (six years by default), and it is written
-- on the hot path, where every key check costs a lock (see 00010).
CREATE TABLE disclosures (
    id               bigserial PRIMARY KEY,
    tenant_id        text NOT NULL,
    patient_index    text NOT NULL CHECK (patient_index <> ''),
    disclosed_at     timestamptz NOT NULL,
    -- 'sent': the relay took it; 'unknown': it may have gone out (the
    -- relay's reply was lost); 'viewed': shown in the portal.
    status           text NOT NULL CHECK (status IN ('sent', 'unknown', 'viewed')),
    channel          text NOT NULL CHECK (channel <> ''),
    -- The row key the recipient is sealed for (with patient_index): a
    -- random token chosen before the insert, as the id is not known yet.
    ref              text NOT NULL CHECK (length(ref) >= 16),
    recipient_sealed bytea NOT NULL,
    notice_type      text NOT NULL CHECK (notice_type <> ''),
    -- full: the notice as built; redacted: fields left out (named in
    -- redacted, field names only); portal-only: only a link was sent.
    detail           text NOT NULL CHECK (detail IN ('full', 'redacted', 'portal-only')),
    redacted         jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(redacted) = 'array'),
    purpose          text NOT NULL CHECK (purpose IN ('payment', 'treatment', 'operations')),
    notice_id        bigint,
    delivery_id      bigint,
    attempt          int
);
-- A patient's accounting, in time order; and the purge, oldest first.
CREATE INDEX disclosures_patient ON disclosures (tenant_id, patient_index, disclosed_at, id);
CREATE INDEX disclosures_disclosed_at ON disclosures (disclosed_at);
-- One row per delivery attempt: a batch recorded twice writes it once.
CREATE UNIQUE INDEX disclosures_delivery_attempt ON disclosures (delivery_id, attempt) WHERE delivery_id IS NOT NULL;

-- The service records and reads disclosures; it can neither rewrite nor
-- remove one (the default privileges of 00007 gave it UPDATE and DELETE).
-- Only the sealed recipient may be re-sealed, by key rotation (tidings
-- keys rotate), which opens it for its row first: a value that is not the
-- row's own does not open. Purging old rows (tidings disclosures purge)
-- runs as the owner, the role migrations run as.
-- What a delivery's attempt is about to disclose, sealed for its row
-- (notice_id, channel) when it is claimed: a delivery found unfinished
-- later (the process died mid-send, the relay may have taken it) is
-- marked unknown and accounted for from it.
ALTER TABLE deliveries ADD COLUMN disclosure_sealed bytea;

REVOKE UPDATE, DELETE, TRUNCATE ON disclosures FROM tidings_app;
GRANT UPDATE (recipient_sealed) ON disclosures TO tidings_app;

-- +goose Down
ALTER TABLE deliveries DROP COLUMN disclosure_sealed;
DROP TABLE disclosures;
