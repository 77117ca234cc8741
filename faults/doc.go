// Package faults is Tidings' fault suite: tests that run `tidings serve`
// and `tidings worker` as separate processes of the real binary against
// PostgreSQL, Redis and a STARTTLS mail catcher of their own, break one of
// them in the middle of a load (SIGKILL or SIGTERM of the worker, a Redis
// restart that loses everything, an immediate Postgres restart), and then
// account for every notification: each one answered 2xx is stored, and each
// notice goes out once, or is marked for an operator to resolve when a
// crash left its outcome unknown.
//
// It has no code of its own outside its tests; run it alone with
// `go test ./faults/` (CI runs it with every package).
package faults
