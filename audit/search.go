package audit

import "time"

// Query selects a tenant's audit rows for a reader (the console's audit
// search): every field is optional but Limit.
type Query struct {
	From, To     time.Time // [From, To); zero: unbounded
	ActionPrefix string    // "policy." finds policy.activated, policy.rejected, …
	SubjectType  string
	SubjectID    string
	Limit        int
}
