// Package fhir owns Tidings' view of FHIR R4: it parses Subscriptions R5
// Backport IG notification Bundles (and R4B/R5 SubscriptionStatus ones) into
// events, wraps bare ExplanationOfBenefit and Appointment resources into such
// Bundles, and turns the resources an event carries into small typed facts
// (EOBFacts, AppointmentFacts, PatientContact) for the notice builders,
// including the Appointment event kind (booked, rescheduled, cancelled...).
//
// Everything here reads outside input. Parsers bound size and nesting, reject
// duplicate JSON keys and duplicate singleton parameters, never panic, and
// report errors that name fields and positions but never a value from the
// input, so an error string can be logged without leaking PHI.
package fhir
