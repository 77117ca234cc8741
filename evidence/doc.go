// Package evidence builds what a covered entity's auditor asks of Tidings
// for one tenant and period: the policy revisions and their Rego test
// results and coverage, a summary of the decision log, the audit chain's
// verification with its checkpoints, the API keys and key events, the
// last test run's results, and an index mapping each HIPAA safeguard
// (45 CFR 164.312, 164.514(d), 164.522, 164.528) to the feature that meets
// it and the tests that prove it. It reads through narrow interfaces and
// writes plain files (JSON and one HTML index); nothing in it is PHI.
package evidence
