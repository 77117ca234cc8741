// Package store owns Tidings' PostgreSQL state through GORM: tenants,
// subscriptions, the event inbox and its outbox, contacts, notices,
// deliveries, policy decisions and the hash-chained audit log. It seals PHI
// before it reaches a column and translates driver errors into the sentinel
// errors callers branch on.
package store
