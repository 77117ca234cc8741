// Package store is the PostgreSQL adapter, through GORM: it implements the
// storage interfaces the core declares (intake.Store, journey.Store,
// delivery.Store, …) for tenants, subscriptions and sources, the event inbox
// (claimed by workers) and the fetch outbox, fetches and gaps, contacts
// (with SMS opt-outs found by a phone's blind index),
// workflows and runs, notices, deliveries, policy decisions, tenants' policy
// revisions (policy.RevisionStore, with a generation processes poll and a
// notification channel), the audit log with its chain and checkpoints
// (package audit decides what goes into them), and advisory locks, one
// family per purpose. Its GORM models are its
// own; it converts rows to the core's types at its boundary, seals PHI
// before it reaches a column, and turns driver errors callers branch on
// into coded errors (package fault). Patients are found by blind index
// (patients.go): lookups probe every index key version, and Reindex and
// Rotate rewrite rows to the current index version and sealing key.
package store
