package evidence

import (
	"context"
	"fmt"
	"io/fs"
	"sort"
	"testing/fstest"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/policy"
)

// DecisionStats summarises a tenant's decision log over a period.
type DecisionStats struct {
	Total        int64            `json:"total"`
	Allowed      int64            `json:"allowed"`
	Denied       int64            `json:"denied"`
	ByRevision   map[string]int64 `json:"by_revision"`
	ByReason     map[string]int64 `json:"by_reason"` // policy reasons name rules, never values
	LatencyP50us float64          `json:"latency_p50_us"`
	LatencyP99us float64          `json:"latency_p99_us"`
}

// Source is what the pack reads; package store implements it.
type Source interface {
	// ActivePolicies are the tenants' uploaded active revisions.
	ActivePolicies(ctx context.Context) (int64, []policy.TenantRevision, error)
	// PolicyHistory is the tenant's policy audit rows (activations,
	// resets, rejections) up to to.
	AuditRowsByAction(ctx context.Context, tenant string, from, to time.Time, actions []string) ([]audit.Row, error)
	DecisionStats(ctx context.Context, tenant string, from, to time.Time) (DecisionStats, error)
	ListKeys(ctx context.Context, tenant string) ([]access.Key, error)
	AuditSeqSpan(ctx context.Context, tenant string, from, to time.Time) (first, last int64, err error)
}

// Verifier checks a tenant's audit chain (audit.Verifier).
type Verifier interface {
	Verify(ctx context.Context, tenant string) (audit.Report, error)
}

// Inputs are what Build needs.
type Inputs struct {
	Tenant   string
	From, To time.Time
	Source   Source
	Verifier Verifier
	// BuiltIn is the built-in policy bundle, active for a tenant that
	// uploaded none.
	BuiltIn fs.FS
	// TestReport is `go test -json` output of the last test run; nil: none.
	TestReport []byte
	Now        time.Time
}

// PolicyEvidence is the tenant's active policy and what its tests say.
type PolicyEvidence struct {
	Revision    string     `json:"revision"` // "built-in" or the uploaded revision's hash
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	ActivatedBy string     `json:"activated_by,omitempty"`
	Files       []string   `json:"files"`
	Tests       struct {
		Passed     int      `json:"passed"`
		Failed     int      `json:"failed"`
		Skipped    int      `json:"skipped"`
		Failures   []string `json:"failures,omitempty"`
		Coverage   float64  `json:"coverage_percent"`
		NotCovered []string `json:"not_covered,omitempty"`
	} `json:"tests"`
	// History is the policy's audit rows in the period: activations,
	// resets, refused uploads.
	History []audit.Row `json:"history"`
}

// AuditEvidence is the chain's verification.
type AuditEvidence struct {
	OK              bool           `json:"ok"`
	Problem         *audit.Problem `json:"problem,omitempty"`
	RowsChecked     int64          `json:"rows_checked"`
	DBCheckpoints   int            `json:"database_checkpoints"`
	FileCheckpoints int            `json:"file_checkpoints"`
	Unchained       int64          `json:"rows_not_yet_chained"`
	// PeriodFirstSeq and PeriodLastSeq are the chain positions of the
	// period's rows (0 when it has none): tidings audit export covers them.
	PeriodFirstSeq int64 `json:"period_first_seq"`
	PeriodLastSeq  int64 `json:"period_last_seq"`
}

// KeyEvidence is who may call the API, and what happened to keys.
type KeyEvidence struct {
	APIKeys []access.Key `json:"api_keys"` // never a secret
	Events  []audit.Row  `json:"events"`   // created, revoked, sealing keys rotated
}

// SafeguardStatus is a safeguard with its tests' results in the report.
type SafeguardStatus struct {
	Safeguard
	Results map[string]string `json:"test_results"` // test → pass, fail, skip or "not run"
	Met     string            `json:"status"`       // "tested", "failing", "not run", "no test"
}

// Pack is the whole evidence pack.
type Pack struct {
	Tenant     string            `json:"tenant"`
	From       time.Time         `json:"from"`
	To         time.Time         `json:"to"`
	Generated  time.Time         `json:"generated"`
	Policy     PolicyEvidence    `json:"-"`
	Decisions  DecisionStats     `json:"-"`
	Audit      AuditEvidence     `json:"-"`
	Keys       KeyEvidence       `json:"-"`
	Tests      *TestRun          `json:"-"`
	Safeguards []SafeguardStatus `json:"safeguards"`
}

var (
	policyActions = []string{"policy.activated", "policy.reset", "policy.rejected"}
	keyActions    = []string{"key.created", "key.revoked", "seal.rotated", "index.reindexed"}
)

// Build gathers the pack. A failing policy test or a broken chain is
// evidence too: it is reported in the pack, not returned as an error.
func Build(ctx context.Context, in Inputs) (Pack, error) {
	p := Pack{Tenant: in.Tenant, From: in.From.UTC(), To: in.To.UTC(), Generated: in.Now.UTC()}
	var err error
	if p.Policy, err = policyEvidence(ctx, in); err != nil {
		return p, err
	}
	if p.Decisions, err = in.Source.DecisionStats(ctx, in.Tenant, in.From, in.To); err != nil {
		return p, fmt.Errorf("decision log: %w", err)
	}
	rep, err := in.Verifier.Verify(ctx, in.Tenant)
	if err != nil {
		return p, fmt.Errorf("audit verification: %w", err)
	}
	p.Audit = AuditEvidence{OK: rep.OK(), Problem: rep.Problem, RowsChecked: rep.Rows, DBCheckpoints: rep.DBCheckpoints,
		FileCheckpoints: rep.FileCheckpoints, Unchained: rep.Backlog.Rows}
	if p.Audit.PeriodFirstSeq, p.Audit.PeriodLastSeq, err = in.Source.AuditSeqSpan(ctx, in.Tenant, in.From, in.To); err != nil {
		return p, fmt.Errorf("audit span: %w", err)
	}
	if p.Keys.APIKeys, err = in.Source.ListKeys(ctx, in.Tenant); err != nil {
		return p, fmt.Errorf("keys: %w", err)
	}
	if p.Keys.APIKeys == nil {
		p.Keys.APIKeys = []access.Key{}
	}
	if p.Keys.Events, err = in.Source.AuditRowsByAction(ctx, in.Tenant, in.From, in.To, keyActions); err != nil {
		return p, fmt.Errorf("key events: %w", err)
	}
	if in.TestReport != nil {
		run, err := ParseTestReport(in.TestReport)
		if err != nil {
			return p, fmt.Errorf("test report: %w", err)
		}
		p.Tests = &run
	}
	p.Safeguards = statuses(p.Tests)
	return p, nil
}

func policyEvidence(ctx context.Context, in Inputs) (PolicyEvidence, error) {
	var pe PolicyEvidence
	_, revs, err := in.Source.ActivePolicies(ctx)
	if err != nil {
		return pe, fmt.Errorf("active policies: %w", err)
	}
	fsys := in.BuiltIn
	pe.Revision = "built-in"
	for _, r := range revs {
		if r.TenantID != in.Tenant {
			continue
		}
		m := fstest.MapFS{}
		for name, body := range r.Files {
			m[name] = &fstest.MapFile{Data: []byte(body)}
		}
		at := r.ActivatedAt.UTC()
		fsys, pe.Revision, pe.ActivatedAt, pe.ActivatedBy = m, r.Revision, &at, r.ActivatedBy
	}
	if err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			pe.Files = append(pe.Files, path)
		}
		return err
	}); err != nil {
		return pe, err
	}
	sort.Strings(pe.Files)
	rep, err := policy.RunTestsWithCoverage(ctx, fsys)
	if err != nil && rep.Passed+rep.Failed == 0 {
		return pe, fmt.Errorf("policy tests: %w", err)
	}
	pe.Tests.Passed, pe.Tests.Failed, pe.Tests.Skipped = rep.Passed, rep.Failed, rep.Skipped
	pe.Tests.Failures, pe.Tests.Coverage, pe.Tests.NotCovered = rep.Failures, rep.Coverage, rep.NotCovered
	if pe.History, err = in.Source.AuditRowsByAction(ctx, in.Tenant, in.From, in.To, policyActions); err != nil {
		return pe, fmt.Errorf("policy history: %w", err)
	}
	return pe, nil
}

func statuses(run *TestRun) []SafeguardStatus {
	out := make([]SafeguardStatus, len(Safeguards))
	for i, s := range Safeguards {
		st := SafeguardStatus{Safeguard: s, Results: map[string]string{}}
		failing, notRun := false, false
		for _, t := range s.Tests {
			r := "not run"
			if run != nil {
				if got, ok := run.Tests[t]; ok {
					r = got
				}
			}
			st.Results[t] = r
			failing = failing || r == "fail"
			notRun = notRun || r == "not run"
		}
		switch {
		case len(s.Tests) == 0:
			st.Met = "no test"
		case failing:
			st.Met = "failing"
		case notRun:
			st.Met = "not run"
		default:
			st.Met = "tested"
		}
		out[i] = st
	}
	return out
}
