-- +goose Up
-- Every row written for a notice (event, notice, decision, delivery,
-- engagement, six audit rows and their chain rows) checked its tenant or
-- its audit row with a foreign key: a SELECT … FOR KEY SHARE of the
-- parent, per row. Every notice of a tenant locks the same tenants row, so
-- concurrent transactions pile share locks on one row (a multixact each
-- time), and the checks were 28 statements per notice. Tenants are never
-- deleted (no command deletes one), their ids on these rows come from
-- authenticated subscriptions and runs, the service's role cannot delete
-- audit rows, and the audit chain is verified by its keyed hashes (tidings
-- audit verify reports a chain row without its audit row). The keys between
-- a notice's own rows (notice → event and run, delivery → notice, decision
-- → notice, run → workflow) stay.
ALTER TABLE events DROP CONSTRAINT events_tenant_id_fkey;
ALTER TABLE notices DROP CONSTRAINT notices_tenant_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_tenant_id_fkey;
ALTER TABLE policy_decisions DROP CONSTRAINT policy_decisions_tenant_id_fkey;
ALTER TABLE audit_log DROP CONSTRAINT audit_log_tenant_id_fkey;
ALTER TABLE audit_chain DROP CONSTRAINT audit_chain_audit_id_fkey;
ALTER TABLE engagements DROP CONSTRAINT engagements_tenant_id_fkey;

-- +goose Down
ALTER TABLE engagements ADD CONSTRAINT engagements_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE audit_chain ADD CONSTRAINT audit_chain_audit_id_fkey FOREIGN KEY (audit_id) REFERENCES audit_log(id);
ALTER TABLE audit_log ADD CONSTRAINT audit_log_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE policy_decisions ADD CONSTRAINT policy_decisions_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE deliveries ADD CONSTRAINT deliveries_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE notices ADD CONSTRAINT notices_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE events ADD CONSTRAINT events_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);
