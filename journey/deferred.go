package journey

import "time"

// Deferred is the error a Sender returns for a send that may not happen
// before Until (an SMS due in the workflow's quiet time): the run's
// pending send is tried again then, rather than after the usual backoff.
// Like any failed attempt it counts towards MaxAttempts, so a Sender
// fails the notice on the last try instead of deferring it.
type Deferred struct{ Until time.Time }

func (d *Deferred) Error() string {
	return "deferred until " + d.Until.UTC().Format(time.RFC3339)
}
