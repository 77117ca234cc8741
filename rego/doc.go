// Package rego holds Tidings' Rego policies, their tests (*_test.rego) and the
// data they read (data/*.json), and embeds them as FS. The compliance team owns
// these files; the policy package compiles and evaluates them. README.md and
// decision.schema.json describe the input the policy expects and the decision
// it returns; this package's Go tests check the README's examples against both.
package rego
