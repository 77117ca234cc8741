// Package journey owns workflow runs, the core of what Tidings does with an
// event: a stored FHIR event (Event) starts the runs of the workflows its
// trigger names, one per (workflow, subject); an appointment's new version
// is applied to the runs it has (a cancellation ends its reminders, a
// reschedule moves them); a run wakes, feeds the pure step machine of
// package workflow what happened, saves the new state with the actions it
// decided, and carries them out (sends through a Sender, go-tos, segments).
// It also records engagement and API events, segment membership and
// enrolment, and administers workflow definitions. Storage (Store) and the
// queue (Queue) are interfaces it declares; store and worker implement them.
package journey
