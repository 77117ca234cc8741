-- +goose Up
-- Subscription and source ids belong to their tenant: two tenants may both
-- have a subscription "ehr-eob" or a source "epic". With global ids, a
-- tenant creating one that another tenant had got 409, which told it the
-- other tenant's ids. Every row that names a subscription or a source now
-- names its tenant with it, and the keys that deduplicate events and
-- fetches (built from subscription or source ids) are unique per tenant.

-- The tables that named a subscription without its tenant get the column.
ALTER TABLE subscription_event_numbers ADD COLUMN tenant_id text;
UPDATE subscription_event_numbers n SET tenant_id = s.tenant_id FROM subscriptions s WHERE s.id = n.subscription_id;
ALTER TABLE subscription_event_numbers ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE subscription_gaps ADD COLUMN tenant_id text;
UPDATE subscription_gaps g SET tenant_id = s.tenant_id FROM subscriptions s WHERE s.id = g.subscription_id;
ALTER TABLE subscription_gaps ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE signed_notifications ADD COLUMN tenant_id text;
UPDATE signed_notifications n SET tenant_id = s.tenant_id FROM subscriptions s WHERE s.id = n.subscription_id;
ALTER TABLE signed_notifications ALTER COLUMN tenant_id SET NOT NULL;

ALTER TABLE events DROP CONSTRAINT events_subscription_id_fkey;
ALTER TABLE fetches DROP CONSTRAINT fetches_subscription_id_fkey;
ALTER TABLE subscription_event_numbers DROP CONSTRAINT subscription_event_numbers_subscription_id_fkey;
ALTER TABLE subscription_gaps DROP CONSTRAINT subscription_gaps_subscription_id_fkey;
ALTER TABLE signed_notifications DROP CONSTRAINT signed_notifications_subscription_id_fkey;
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_source_id_fkey;

ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_pkey, ADD PRIMARY KEY (tenant_id, id);
ALTER TABLE fhir_sources DROP CONSTRAINT fhir_sources_pkey, ADD PRIMARY KEY (tenant_id, id);

ALTER TABLE subscription_event_numbers DROP CONSTRAINT subscription_event_numbers_pkey,
    ADD PRIMARY KEY (tenant_id, subscription_id, event_number);
ALTER TABLE subscription_gaps DROP CONSTRAINT subscription_gaps_subscription_id_from_number_to_number_key,
    ADD CONSTRAINT subscription_gaps_numbers UNIQUE (tenant_id, subscription_id, from_number, to_number);
ALTER TABLE signed_notifications DROP CONSTRAINT signed_notifications_pkey,
    ADD PRIMARY KEY (tenant_id, subscription_id, signature);
DROP INDEX signed_notifications_signed_at;
CREATE INDEX signed_notifications_signed_at ON signed_notifications (tenant_id, subscription_id, signed_at);
DROP INDEX events_subscription_received;
CREATE INDEX events_subscription_received ON events (tenant_id, subscription_id, received_at);

ALTER TABLE events DROP CONSTRAINT events_dedupe_key_key,
    ADD CONSTRAINT events_dedupe_key UNIQUE (tenant_id, dedupe_key);
ALTER TABLE fetches DROP CONSTRAINT fetches_dedupe_key_key,
    ADD CONSTRAINT fetches_dedupe_key UNIQUE (tenant_id, dedupe_key);

ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_source FOREIGN KEY (tenant_id, source_id) REFERENCES fhir_sources (tenant_id, id);
ALTER TABLE events ADD CONSTRAINT events_subscription FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscriptions (tenant_id, id);
ALTER TABLE fetches ADD CONSTRAINT fetches_subscription FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscriptions (tenant_id, id);
ALTER TABLE subscription_event_numbers ADD CONSTRAINT subscription_event_numbers_subscription
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscriptions (tenant_id, id);
ALTER TABLE subscription_gaps ADD CONSTRAINT subscription_gaps_subscription
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscriptions (tenant_id, id);
ALTER TABLE signed_notifications ADD CONSTRAINT signed_notifications_subscription
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscriptions (tenant_id, id) ON DELETE CASCADE;

-- +goose Down
-- Global ids again: refused while two tenants share a subscription or
-- source id, or a dedupe key (nothing could say which row keeps it).
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT id FROM subscriptions GROUP BY id HAVING count(*) > 1)
        OR EXISTS (SELECT id FROM fhir_sources GROUP BY id HAVING count(*) > 1)
        OR EXISTS (SELECT dedupe_key FROM events GROUP BY dedupe_key HAVING count(*) > 1)
        OR EXISTS (SELECT dedupe_key FROM fetches GROUP BY dedupe_key HAVING count(*) > 1) THEN
        RAISE EXCEPTION 'two tenants share a subscription id, source id or dedupe key; migration 18 cannot be rolled back';
    END IF;
END
$$;
-- +goose StatementEnd

ALTER TABLE signed_notifications DROP CONSTRAINT signed_notifications_subscription;
ALTER TABLE subscription_gaps DROP CONSTRAINT subscription_gaps_subscription;
ALTER TABLE subscription_event_numbers DROP CONSTRAINT subscription_event_numbers_subscription;
ALTER TABLE fetches DROP CONSTRAINT fetches_subscription;
ALTER TABLE events DROP CONSTRAINT events_subscription;
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_source;

ALTER TABLE fetches DROP CONSTRAINT fetches_dedupe_key, ADD CONSTRAINT fetches_dedupe_key_key UNIQUE (dedupe_key);
ALTER TABLE events DROP CONSTRAINT events_dedupe_key, ADD CONSTRAINT events_dedupe_key_key UNIQUE (dedupe_key);

DROP INDEX events_subscription_received;
CREATE INDEX events_subscription_received ON events (subscription_id, received_at);
DROP INDEX signed_notifications_signed_at;
CREATE INDEX signed_notifications_signed_at ON signed_notifications (subscription_id, signed_at);
ALTER TABLE signed_notifications DROP CONSTRAINT signed_notifications_pkey,
    ADD PRIMARY KEY (subscription_id, signature);
ALTER TABLE subscription_gaps DROP CONSTRAINT subscription_gaps_numbers,
    ADD CONSTRAINT subscription_gaps_subscription_id_from_number_to_number_key UNIQUE (subscription_id, from_number, to_number);
ALTER TABLE subscription_event_numbers DROP CONSTRAINT subscription_event_numbers_pkey,
    ADD PRIMARY KEY (subscription_id, event_number);

ALTER TABLE fhir_sources DROP CONSTRAINT fhir_sources_pkey, ADD PRIMARY KEY (id);
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_pkey, ADD PRIMARY KEY (id);

ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_source_id_fkey FOREIGN KEY (source_id) REFERENCES fhir_sources (id);
ALTER TABLE events ADD CONSTRAINT events_subscription_id_fkey FOREIGN KEY (subscription_id) REFERENCES subscriptions (id);
ALTER TABLE fetches ADD CONSTRAINT fetches_subscription_id_fkey FOREIGN KEY (subscription_id) REFERENCES subscriptions (id);
ALTER TABLE subscription_event_numbers ADD CONSTRAINT subscription_event_numbers_subscription_id_fkey
    FOREIGN KEY (subscription_id) REFERENCES subscriptions (id);
ALTER TABLE subscription_gaps ADD CONSTRAINT subscription_gaps_subscription_id_fkey
    FOREIGN KEY (subscription_id) REFERENCES subscriptions (id);
ALTER TABLE signed_notifications ADD CONSTRAINT signed_notifications_subscription_id_fkey
    FOREIGN KEY (subscription_id) REFERENCES subscriptions (id) ON DELETE CASCADE;

ALTER TABLE signed_notifications DROP COLUMN tenant_id;
ALTER TABLE subscription_gaps DROP COLUMN tenant_id;
ALTER TABLE subscription_event_numbers DROP COLUMN tenant_id;
