package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/evidence"
	"github.com/tidings-health/tidings/rego"
	"github.com/tidings-health/tidings/store"
)

func runEvidence(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("evidence --tenant T --from DATE --to DATE --out DIR [--test-report FILE] [--checkpoints DIR]",
		`Writes what an auditor asks of Tidings for one tenant and period into DIR:
policy.json (the active policy, its Rego test results and coverage, its history),
decisions.json (the decision log summarised), audit.json (the audit chain's
verification against its signed checkpoints), keys.json (API keys, never a
secret, and key events), tests.json (the last test run, from --test-report, the
go test -json output scripts/test.sh keeps), and index.json and index.html, which
map each HIPAA safeguard (45 CFR 164.312, 164.514(d), 164.522, 164.528) to the
feature that meets it and the tests that prove it. Nothing in it is PHI. Dates are
YYYY-MM-DD (UTC midnight) or RFC 3339; --to is excluded. Needs
TIDINGS_DATABASE_URL and TIDINGS_AUDIT_KEYS (as tidings audit verify).`, stderr)
	tenant := fs.String("tenant", "", "the tenant (required)")
	fromS := fs.String("from", "", "start of the period (required)")
	toS := fs.String("to", "", "end of the period, excluded (required)")
	out := fs.String("out", "", "folder to write (required)")
	report := fs.String("test-report", "", "go test -json output of the last test run")
	dir := fs.String("checkpoints", "", "checkpoint folder (default TIDINGS_AUDIT_CHECKPOINT_DIR)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The same times the accounting of disclosures takes.
	from, ferr := api.ParseDisclosureTime(*fromS)
	to, terr := api.ParseDisclosureTime(*toS)
	if *tenant == "" || *out == "" || *fromS == "" || *toS == "" || ferr != nil || terr != nil || !from.Before(to) || fs.NArg() != 0 {
		fs.Usage()
		return usageError{"evidence needs --tenant, --out and --from before --to (YYYY-MM-DD or RFC 3339)"}
	}
	var raw []byte
	if *report != "" {
		var err error
		if raw, err = os.ReadFile(*report); err != nil {
			return err
		}
	}
	cfg, err := loadAuditConfig(config.RoleAudit)
	if err != nil {
		return err
	}
	keys, err := cfg.AuditKeyring()
	if err != nil {
		return err
	}
	pub, err := checkpointPublicKeys(cfg, "")
	if err != nil {
		return err
	}
	if *dir == "" {
		*dir = cfg.AuditCheckpointDir
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, nil, store.Options{MaxOpenConns: 2})
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(stderr, "evidence for %s, %s to %s: policy tests, decision log, audit chain, keys …\n",
		*tenant, from.Format(time.RFC3339), to.Format(time.RFC3339))
	p, err := evidence.Build(ctx, evidence.Inputs{Tenant: *tenant, From: from, To: to, Source: st,
		Verifier: &audit.Verifier{Store: st, Keys: keys, PublicKeys: pub, CheckpointDir: *dir},
		BuiltIn:  rego.FS, TestReport: raw, Now: time.Now()})
	if err != nil {
		return err
	}
	if err := p.Write(*out); err != nil {
		return err
	}
	met := map[string]int{}
	for _, s := range p.Safeguards {
		met[s.Met]++
	}
	chain := "verifies"
	if !p.Audit.OK {
		chain = "DOES NOT VERIFY"
	}
	fmt.Fprintf(stdout, "wrote %s: policy %s (%d Rego tests passed, %d failed, %.1f%% covered), %d decisions, audit chain %s, %d API keys; safeguards: %d tested, %d failing, %d not run, %d without a test\n",
		*out, p.Policy.Revision, p.Policy.Tests.Passed, p.Policy.Tests.Failed, p.Policy.Tests.Coverage, p.Decisions.Total, chain,
		len(p.Keys.APIKeys), met["tested"], met["failing"], met["not run"], met["no test"])
	return nil
}
