// Package access owns who may call the /v1 API: API keys, each bound to one
// tenant and one role, and the rule of which role may use which route.
//
// A key is created once (Service.Create, from `tidings keys create` or the
// admin API) and its token is shown once: "tdk_<id>_<secret>". Only the
// SHA-256 of the secret is stored; the id is public and is what the audit
// log records as the actor of everything done with the key. A key may
// expire and may be revoked; either stops it within the authentication
// cache's lifetime (CacheTTL).
//
// Roles: integration (sources, subscriptions), operator (workflows, runs,
// events, segments), contacts (patient contact details), compliance
// (policies, decision log, audit, disclosures) and admin (keys, and
// everything the other roles may do, in its own tenant).
package access
