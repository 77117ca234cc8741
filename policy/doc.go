// Package policy is Tidings' embedded OPA engine. An Engine compiles, tests
// and prepares one revision of the Rego policies from a Source (the files
// embedded from rego/, a directory, or a signed OPA bundle), answers Decide
// for each notice with the decision and the revision that made it (from the
// policies partially evaluated against their data once, at load, and, for
// the operator's own policies, again with the notice type, channel type and
// channel security known, once for each such combination on first use, up
// to 32; specialise.go), and swaps
// in a new revision atomically on Reload or Watch, keeping the last good one
// when a change does not compile or fails its own *_test.rego tests; with no
// good revision it decides nothing. Every policy compiles against an
// allow-list of OPA built-ins; any other fails to compile. For compliance
// teams it dry-runs the active or a candidate policy on a sample input with
// the rules that fired (Evaluate); with WithSandbox a candidate, a caller's
// code, runs in a child process (ServeSandbox) under a time and memory
// limit, so that it cannot exhaust the process that decides. Tenants
// decides for each tenant with the revision it uploaded (Upload: compiled,
// tested and partially evaluated in the sandbox first; kept by a
// RevisionStore and reloaded by every process when its generation changes)
// or, without one, with the default Engine. It also runs
// the policies' tests with coverage (RunTestsWithCoverage), and hashes
// inputs for the decision log (InputHash) so that PHI is never stored.
package policy
