package evidence

// Safeguard is one HIPAA requirement, what in Tidings meets it, the tests
// that prove it (each must exist: TestSafeguardTestsExist) and the files
// of the pack that bear on it.
type Safeguard struct {
	Section  string   `json:"section"`
	Title    string   `json:"title"`
	Feature  string   `json:"feature"`
	Tests    []string `json:"tests"`
	Evidence []string `json:"evidence"`
}

// Safeguards is the map an auditor reads first. The README's table says
// the same.
var Safeguards = []Safeguard{
	{"164.312(a)(1)", "Access control",
		"API keys per tenant with one role each (integration, operator, contacts, compliance, admin); every /v1 route declares its role; keys hashed, shown once, expiring and revocable",
		[]string{"TestEveryRouteChecksItsRole", "TestKeysSeeOnlyTheirTenant", "TestKeyLifecycle", "TestEveryV1RouteHasARole"},
		[]string{"keys.json"}},
	{"164.312(a)(2)(i)", "Unique user identification",
		"each API key has its own id, recorded as the actor (key:<id>) of every action it takes",
		[]string{"TestKeyLifecycle"},
		[]string{"keys.json", "audit.json"}},
	{"164.312(a)(2)(iii)", "Automatic logoff",
		"a patient's portal session (after a one-time code or date of birth) lasts TIDINGS_PORTAL_SESSION_TTL (15 minutes by default) and opens only its own notice",
		[]string{"TestPortalSessionExpires", "TestPortalSessionOpensItsNoticeOnly", "TestPortalRefusals"},
		nil},
	{"164.312(a)(2)(iv)", "Encryption and decryption",
		"PHI outside Postgres' own columns is sealed with AES-256-GCM, bound to tenant, table, column and row, with the key id in the ciphertext; keys rotate with tidings keys rotate",
		[]string{"TestSealedValuesCopiedElsewhereDoNotOpen", "TestRotateReSealsEverythingResumably", "TestPHICanaryLeaksNowhere"},
		[]string{"keys.json"}},
	{"164.312(b)", "Audit controls",
		"every action writes an audit row in its own transaction; a chainer links them into a keyed HMAC chain per tenant with Ed25519-signed checkpoints, in the database and outside it",
		[]string{"TestAppRoleCannotRewriteTheAuditLog"},
		[]string{"audit.json"}},
	{"164.312(c)(1)", "Integrity",
		"tidings audit verify detects an edited, deleted, reordered or truncated audit row and names the first bad position; sealed values are authenticated (AEAD)",
		[]string{"TestSealedValuesCopiedElsewhereDoNotOpen", "TestSwappedContactEmailFailsTheNoticeWithoutSending"},
		[]string{"audit.json"}},
	{"164.312(d)", "Person or entity authentication",
		"FHIR notifications authenticate with a per-subscription secret (and optional HMAC signature with timestamp, replays refused); API callers with hashed API keys",
		[]string{"TestSignedNotifications", "TestReplayedSignedStatusChangeIsRefused", "TestNotifyAnswersUnknownSubscriptionAsWrongSecret"},
		[]string{"keys.json"}},
	{"164.312(e)(1)", "Transmission security",
		"email leaves only over enforced STARTTLS (or implicit TLS); a relay without TLS gets nothing; FHIR reads refuse private and special-purpose addresses",
		[]string{"TestSendRequireTLSWithoutSTARTTLSFailsClosed", "TestNonPublicAddressesAreRefused"},
		[]string{"policy.json"}},
	{"164.312(e)(2)(i)", "Integrity controls (transmission)",
		"mail is DKIM-signed with the tenant's key for its sender domain; webhooks are HMAC-signed (Standard Webhooks)",
		[]string{"TestDKIMSignsPerTenantDomain", "TestNoticeIsDKIMSignedWithTheTenantsKey", "TestSignatureMatchesTheSpecificationsExample"},
		nil},
	{"164.514(d)", "Minimum necessary",
		"each notice shows only what the tenant's Rego policy allows for its channel: redactions, generic provider labels, portal-only notices for sensitive care or unsecured channels; policies are tested before they activate",
		[]string{"TestSensitiveAppointmentNamesNoProviderOrLocation", "TestTenantPolicies", "TestReasonQuotingThePayloadGivesNoDecision"},
		[]string{"policy.json", "decisions.json"}},
	{"164.522", "Restrictions and confidential communications",
		"a contact's restrictions, opt-outs and confidential-communication address are honoured by the policy and the channel (only the confidential address is used)",
		[]string{"TestAnotherSourcesPatientDoesNotRedirectNotices", "TestPatientRights", "TestRestrictionConsentAndErrorOutcomeDeny"},
		[]string{"policy.json"}},
	{"164.528", "Accounting of disclosures",
		"every delivery and portal view records a disclosure (date, recipient sealed, channel, content class, detail, purpose) in the transaction of its outcome; POST /v1/disclosures/search and tidings disclosures answer a patient's request; six years kept at least",
		[]string{"TestDisclosuresEndToEnd", "TestDeliveryOutcomesRecordDisclosures", "TestUnfinishedDeliveriesAreAccountedFor", "TestDisclosuresAreAppendOnlyForTheService", "TestPortalPickupInChromium"},
		[]string{"decisions.json"}},
}
