// Package store owns Tidings' PostgreSQL state through GORM: tenants,
// subscriptions, the event inbox and its outbox, contacts, notices,
// deliveries, policy decisions, the audit log with its chain and checkpoints
// (package audit decides what goes into them), and advisory locks. It seals PHI
// before it reaches a column and translates the driver errors callers branch on
// (not found, duplicate key, unknown tenant) into sentinel errors.
package store
