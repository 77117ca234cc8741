// Package metrics owns Tidings' Prometheus metrics: their names, help texts
// and labels, the registry of one process (never the global default) and
// the /metrics handler. Every label takes a value from a fixed set the
// package defines (outcome, status, channel, result, queue), so the number
// of series is bounded and no id or patient data can reach a label; there
// is no tenant label, because tenants are not a bounded set. Callers on hot
// paths get counters resolved once, when the Metrics is built: an update is
// an atomic add, without a map lookup or an allocation. A nil *Metrics
// records nothing, for tools and tests that do not serve metrics.
package metrics
