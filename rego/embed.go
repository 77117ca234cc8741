package rego

import "embed"

// FS holds the policies, their tests and their data as shipped in the binary.
// File paths are relative to this folder, so data/allowlist.json loads under
// data.data, exactly as `opa test rego/` and `opa eval -d rego/` load it.
//
//go:embed *.rego data/*.json
var FS embed.FS
