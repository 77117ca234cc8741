-- +goose Up
-- FHIR servers Tidings fetches from, what it must fetch (id-only and empty
-- notifications, rest-hook pings), and the event numbers it has seen, so gaps
-- can be found and recovered.

CREATE TABLE fhir_sources (
    id                  text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    tenant_id           text NOT NULL REFERENCES tenants(id),
    base_url            text NOT NULL,
    -- 'bearer' (a static token) or 'smart-backend' (SMART Backend Services).
    auth_type           text NOT NULL CHECK (auth_type IN ('bearer', 'smart-backend', 'none')),
    token_url           text NOT NULL DEFAULT '',
    client_id           text NOT NULL DEFAULT '',
    key_id              text NOT NULL DEFAULT '',
    scopes              text NOT NULL DEFAULT '',
    -- Sealed by the application: the PEM private key, or the bearer token.
    credential_sealed   bytea,
    created_at          timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE subscriptions
    ADD COLUMN source_id          text REFERENCES fhir_sources(id),
    -- Search criteria used to find what an empty notification or a ping is about,
    -- e.g. "ExplanationOfBenefit?patient.identifier=..." (without _lastUpdated).
    ADD COLUMN criteria           text NOT NULL DEFAULT '',
    ADD COLUMN heartbeat_period_s int NOT NULL DEFAULT 0,
    ADD COLUMN silent_since       timestamptz,
    -- The Subscription's own reference on the FHIR server, as its notifications
    -- name it (for $events); learnt from the first notification.
    ADD COLUMN remote_ref         text NOT NULL DEFAULT '';

-- One row per event number a subscription's server announced, whatever the
-- focus type, so a number that never arrived shows up as a gap.
CREATE TABLE subscription_event_numbers (
    subscription_id  text NOT NULL REFERENCES subscriptions(id),
    event_number     bigint NOT NULL,
    seen_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, event_number)
);

CREATE INDEX events_subscription_received ON events (subscription_id, received_at);

CREATE TABLE subscription_gaps (
    id               bigserial PRIMARY KEY,
    subscription_id  text NOT NULL REFERENCES subscriptions(id),
    from_number      bigint NOT NULL,
    to_number        bigint NOT NULL,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    recovered_at     timestamptz,
    method           text NOT NULL DEFAULT '',
    recovered_events int NOT NULL DEFAULT 0,
    last_error       text NOT NULL DEFAULT '',
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- Given up after too many failed recoveries; shown, never retried.
    abandoned_at     timestamptz,
    UNIQUE (subscription_id, from_number, to_number)
);

-- What must be fetched before it can become an event: a reference (id-only),
-- or a search since the last event (empty notification, rest-hook ping).
CREATE TABLE fetches (
    id               bigserial PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants(id),
    subscription_id  text NOT NULL REFERENCES subscriptions(id),
    kind             text NOT NULL CHECK (kind IN ('read', 'search')),
    -- For 'read': the focus reference as sent; never a search string with values.
    reference        text NOT NULL DEFAULT '',
    event_number     bigint,
    dedupe_key       text NOT NULL UNIQUE,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    events_created   int NOT NULL DEFAULT 0,
    last_error       text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE outbox
    ALTER COLUMN event_id DROP NOT NULL,
    ADD COLUMN fetch_id bigint REFERENCES fetches(id),
    ADD CONSTRAINT outbox_one_subject CHECK ((event_id IS NULL) <> (fetch_id IS NULL)),
    ADD CONSTRAINT outbox_task_fetch UNIQUE (task_type, fetch_id);

-- +goose Down
ALTER TABLE outbox
    DROP CONSTRAINT outbox_task_fetch,
    DROP CONSTRAINT outbox_one_subject,
    DROP COLUMN fetch_id;
DELETE FROM outbox WHERE event_id IS NULL;
ALTER TABLE outbox ALTER COLUMN event_id SET NOT NULL;
DROP TABLE fetches;
DROP TABLE subscription_gaps;
DROP INDEX events_subscription_received;
DROP TABLE subscription_event_numbers;
ALTER TABLE subscriptions
    DROP COLUMN remote_ref,
    DROP COLUMN silent_since,
    DROP COLUMN heartbeat_period_s,
    DROP COLUMN criteria,
    DROP COLUMN source_id;
DROP TABLE fhir_sources;
