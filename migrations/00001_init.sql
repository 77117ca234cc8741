-- +goose Up
-- Tidings' first schema. PHI never sits in a clear column: resources, contact
-- details and notice payloads are sealed by the application (AES-256-GCM, key
-- id inside the value) and looked up through keyed blind indexes.

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscriptions (
    id                  text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    tenant_id           text NOT NULL REFERENCES tenants(id),
    -- SHA-256 of the shared secret the FHIR server sends (Subscription.channel.header).
    secret_hash         bytea NOT NULL,
    topic               text NOT NULL DEFAULT '',
    source_url          text NOT NULL DEFAULT '',
    status              text NOT NULL DEFAULT 'active',
    last_handshake_at   timestamptz,
    last_heartbeat_at   timestamptz,
    heartbeats          bigint NOT NULL DEFAULT 0,
    events_since_start  bigint NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    id               bigserial PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants(id),
    subscription_id  text NOT NULL REFERENCES subscriptions(id),
    resource_type    text NOT NULL,
    -- Resource ids are opaque technical identifiers, kept clear for dedupe and support.
    resource_id      text NOT NULL,
    version_id       text NOT NULL DEFAULT '',
    event_number     bigint,
    -- (subscription, type, id, versionId or a hash of the resource).
    dedupe_key       text NOT NULL UNIQUE,
    -- Sealed JSON: the focus resource and the resources it references.
    resource_sealed  bytea NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant_received ON events (tenant_id, received_at);

-- Transactional outbox: one row per task to enqueue; the reconciler enqueues
-- rows with enqueued_at NULL, so an event survives Redis being down.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants(id),
    task_type    text NOT NULL,
    event_id     bigint NOT NULL REFERENCES events(id),
    enqueued_at  timestamptz,
    attempts     int NOT NULL DEFAULT 0,
    last_error   text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_type, event_id)
);
CREATE INDEX outbox_pending ON outbox (created_at) WHERE enqueued_at IS NULL;

CREATE TABLE contacts (
    id             bigserial PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants(id),
    -- Keyed hash of the patient reference (seal.BlindIndex), never the reference itself.
    patient_index  text NOT NULL,
    email_sealed   bytea,
    language       text NOT NULL DEFAULT '',
    time_zone      text NOT NULL DEFAULT '',
    source         text NOT NULL CHECK (source IN ('api', 'fhir')),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, patient_index)
);

CREATE TABLE notices (
    id              bigserial PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    event_id        bigint NOT NULL REFERENCES events(id),
    notice_type     text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'sent', 'denied', 'failed', 'skipped')),
    -- Reasons are policy texts and delivery errors; they never hold PHI.
    reasons         jsonb NOT NULL DEFAULT '[]',
    payload_sealed  bytea,
    -- Random opaque token for the portal link; carries no PHI.
    portal_token    text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, notice_type)
);
CREATE INDEX notices_tenant_status ON notices (tenant_id, status);

CREATE TABLE deliveries (
    id            bigserial PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants(id),
    notice_id     bigint NOT NULL REFERENCES notices(id),
    channel       text NOT NULL,
    status        text NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
    attempts      int NOT NULL DEFAULT 0,
    tls           boolean NOT NULL DEFAULT false,
    message_id    text NOT NULL DEFAULT '',
    error         text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (notice_id, channel)
);

CREATE TABLE policy_decisions (
    id               bigserial PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants(id),
    notice_id        bigint NOT NULL REFERENCES notices(id),
    policy_revision  text NOT NULL,
    -- SHA-256 of the decision input; the input itself holds PHI and is not kept.
    input_hash       text NOT NULL,
    allow            boolean NOT NULL,
    reasons          jsonb NOT NULL DEFAULT '[]',
    latency_us       bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Append-only, hash-chained per tenant: hash = sha256(prev_hash || canonical row).
CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants(id),
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,
    action        text NOT NULL,
    subject_type  text NOT NULL,
    subject_id    text NOT NULL,
    detail        jsonb NOT NULL DEFAULT '{}',
    prev_hash     text NOT NULL,
    hash          text NOT NULL UNIQUE
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE policy_decisions;
DROP TABLE deliveries;
DROP TABLE notices;
DROP TABLE contacts;
DROP TABLE outbox;
DROP TABLE events;
DROP TABLE subscriptions;
DROP TABLE tenants;
