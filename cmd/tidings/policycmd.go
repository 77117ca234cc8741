package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/rego"
)

// minCoverage is the rule coverage `tidings policy test` requires.
const minCoverage = 90.0

func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "sandbox" {
		// Hidden: the child process of a candidate dry run (see policy.Sandbox).
		return policy.ServeSandbox(ctx, args[1:], os.Stdin, stdout)
	}
	if len(args) == 0 || (args[0] != "test" && args[0] != "eval") {
		fmt.Fprint(stderr, "Usage: tidings policy test [DIR] | eval --input FILE [--dir DIR]\n\n  test  run the policies' own tests (*_test.rego) with rule coverage\n  eval  decide one sample input, and list the rules that fired\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return usageError{"policy needs test or eval"}
	}
	if args[0] == "test" {
		fs0 := newFlags("policy test [DIR]", "Runs the *_test.rego tests of DIR (default: the policies built into this binary)\nand reports rule coverage; fails on a failing test or coverage under 90%.", stderr)
		if err := fs0.Parse(args[1:]); err != nil {
			return err
		}
		var fsys fs.FS = rego.FS
		if fs0.NArg() == 1 {
			fsys = os.DirFS(fs0.Arg(0))
		}
		rep, err := policy.RunTestsWithCoverage(ctx, fsys)
		for _, f := range rep.Failures {
			fmt.Fprintf(stdout, "FAIL %s\n", f)
		}
		fmt.Fprintf(stdout, "%d passed, %d failed", rep.Passed, rep.Failed)
		if rep.Skipped > 0 {
			fmt.Fprintf(stdout, ", %d skipped", rep.Skipped)
		}
		fmt.Fprintf(stdout, "\nrule coverage %.1f%%\n", rep.Coverage)
		for _, nc := range rep.NotCovered {
			fmt.Fprintf(stdout, "  not covered: %s\n", nc)
		}
		if err != nil {
			return err
		}
		if rep.Coverage < minCoverage {
			return fmt.Errorf("rule coverage %.1f%% is under %.0f%%", rep.Coverage, minCoverage)
		}
		return nil
	}
	fs1 := newFlags("policy eval --input FILE [--dir DIR]", "Decides the input document in FILE (see rego/decision.schema.json) with the\npolicies in DIR (default: built in) and prints the decision and the rules that fired.", stderr)
	input := fs1.String("input", "", "JSON file with one decision input")
	dir := fs1.String("dir", "", "policy directory to try instead of the built-in policies")
	if err := fs1.Parse(args[1:]); err != nil {
		return err
	}
	if *input == "" {
		fs1.Usage()
		return usageError{"--input is required"}
	}
	raw, err := os.ReadFile(*input)
	if err != nil {
		return err
	}
	eng, err := policy.Open(ctx, policy.FromEmbedded())
	if err != nil {
		return err
	}
	var candidate fs.FS
	if *dir != "" {
		candidate = os.DirFS(*dir)
	}
	res, err := eng.Evaluate(ctx, candidate, raw)
	if err != nil && !errors.Is(err, policy.ErrNoDecision) {
		return err
	}
	out := map[string]any{"allow": res.Decision.Allow, "deny": res.Decision.Deny, "redact": res.Decision.Redact,
		"obligations": res.Decision.Obligations, "revision": res.Decision.Revision, "fired": res.Fired}
	if err != nil {
		out["error"] = err.Error()
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
