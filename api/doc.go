// Package api owns Tidings' HTTP surface on Gin: the FHIR notification
// endpoint, the contacts, workflow, run, event and segment APIs, health
// checks, and the middleware every route shares (body and content-type
// limits, per-client rate limits, auth, request logs without PHI). Errors
// become a FHIR OperationOutcome on /fhir routes and a JSON error elsewhere,
// mapped from error kinds in one place.
package api
