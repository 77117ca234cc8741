// Package rego holds Tidings' Rego policies, their tests (*_test.rego) and the
// data they read (data/*.json), and embeds them as FS. The compliance team owns
// these files; the policy package compiles and evaluates them. See README.md for
// the input each policy expects and the decision it returns.
package rego
