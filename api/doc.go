// Package api is Tidings' HTTP surface on Gin, a thin adapter over the core
// (intake, journey, delivery, policy): the FHIR notification endpoint, the
// contacts, source, subscription, policy, workflow, run, event and segment
// APIs, health checks, and the middleware every route shares (body and
// content-type limits, per-client rate limits, auth, request logs without
// PHI). It defines its request and response bodies. Errors carry a code
// (package fault) that one table maps to a status: a FHIR OperationOutcome
// on /fhir routes, a JSON error elsewhere.
package api
