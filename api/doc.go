// Package api is Tidings' HTTP surface on Gin, a thin adapter over the core
// (intake, journey, delivery, policy, access): the FHIR notification
// endpoint; the contacts, source, subscription, policy (each tenant's own
// revision: status, upload, reset, dry runs one at a time per tenant),
// disclosures (searched by POST: a patient reference goes in no URL),
// workflow, run, event, segment, webhook and API-key APIs; the SMS
// provider's signed callbacks (/sms/status, /sms/inbound); health checks;
// and the middleware every route shares (body and content-type limits,
// per-client rate limits, the API key and the role each /v1 route requires
// (Routes), request logs without PHI). It defines its request and response
// bodies. Errors carry a code (package fault) that one table maps to a
// status: a FHIR OperationOutcome under /fhir, a JSON error elsewhere.
package api
