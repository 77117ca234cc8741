// Package policy is Tidings' embedded OPA engine. It compiles the Rego policies
// and data in rego/ (New also takes any fs.FS, e.g. a directory; no setting exposes that yet) once, prepares the
// notice decision query, and answers Decide for each notice with the decision
// and the revision of the policy files that made it. RunTests runs the
// policies' own *_test.rego tests with OPA's tester.
package policy
