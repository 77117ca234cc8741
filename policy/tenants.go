package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing/fstest"
	"time"
	"unicode/utf8"

	"github.com/tidings-health/tidings/fault"
)

// TenantRevision is a policy revision a tenant uploaded, as the store
// keeps it.
type TenantRevision struct {
	TenantID string
	// Revision is the hex SHA-256 of the compiled files, as decisions
	// record it.
	Revision string
	// Files holds every file by its slash-separated name: Rego modules,
	// their *_test.rego tests and JSON data.
	Files       map[string]string
	ActivatedAt time.Time
	ActivatedBy string
}

// RevisionStore keeps the tenants' active policy revisions; package store
// implements it. Every change is audited with the actor on ctx.
type RevisionStore interface {
	// PolicyGeneration changes whenever any tenant's active revision does.
	PolicyGeneration(ctx context.Context) (int64, error)
	// ActivePolicies returns every tenant's active uploaded revision (a
	// tenant on the default has none) and the generation they are of.
	ActivePolicies(ctx context.Context) (int64, []TenantRevision, error)
	// ActivatePolicy stores rev as its tenant's active revision.
	ActivatePolicy(ctx context.Context, rev TenantRevision) error
	// ResetPolicy puts a tenant back on the default rules.
	ResetPolicy(ctx context.Context, tenantID string) error
	// PolicyRejected records that a tenant's upload was refused, and why.
	PolicyRejected(ctx context.Context, tenantID, reason string) error
}

// Limits of one upload: Tidings' own policies are a few dozen files and
// kilobytes.
const (
	maxUploadFiles = 100
	maxUploadBytes = 4 << 20
)

// Tenants decides for every tenant: with the tenant's own active revision
// when it uploaded one, otherwise with Default, the deployment's rules
// (the built-in ones unless the operator configured others). It loads the
// tenants' revisions from a RevisionStore and reloads them when the
// store's generation changes (Watch), so that every process decides with
// the revision a tenant activated anywhere. It is safe for concurrent use.
type Tenants struct {
	Default *Engine
	Store   RevisionStore
	Log     *slog.Logger

	syncMu sync.Mutex // one Sync at a time
	gen    int64      // generation last loaded; under syncMu
	// loaded is nil until the first Sync: until the process knows which
	// tenants have their own rules, it decides for none of them.
	loaded atomic.Pointer[map[string]*tenantPolicy]
}

// tenantPolicy is one tenant's uploaded revision as loaded here.
type tenantPolicy struct {
	stored TenantRevision
	files  policyFiles
	rev    *revision // nil when it did not load here (err says why)
	err    error
}

// Sync loads the tenants' active revisions if the store's generation
// changed since the last Sync. A revision that was accepted on upload but
// does not load here (an OPA upgrade broke it) decides nothing for its
// tenant, rather than fall back to rules the tenant replaced.
func (t *Tenants) Sync(ctx context.Context) error {
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	cur := t.loaded.Load()
	if cur != nil {
		gen, err := t.Store.PolicyGeneration(ctx)
		if err != nil {
			return fmt.Errorf("policy: tenants' generation: %w", err)
		}
		if gen == t.gen {
			return nil
		}
	}
	gen, revs, err := t.Store.ActivePolicies(ctx)
	if err != nil {
		return fmt.Errorf("policy: tenants' revisions: %w", err)
	}
	next := make(map[string]*tenantPolicy, len(revs))
	for _, sr := range revs {
		if cur != nil {
			if old := (*cur)[sr.TenantID]; old != nil && old.stored.Revision == sr.Revision && old.rev != nil {
				next[sr.TenantID] = old
				continue
			}
		}
		tp := &tenantPolicy{stored: sr, files: filesOf(sr.Files)}
		tp.rev, tp.err = checkCandidate(ctx, tp.files)
		if tp.err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if tp.err == nil && tp.rev.id != sr.Revision {
			tp.rev, tp.err = nil, fmt.Errorf("policy: tenant revision compiled to %s here, not %s", tp.rev.id, sr.Revision)
		}
		if t.Log != nil {
			if tp.err != nil {
				t.Log.Error("tenant policy not loaded; the tenant's notices get no decision", "tenant", sr.TenantID, "revision", sr.Revision, "err", tp.err)
			} else {
				t.Log.Info("tenant policy loaded", "tenant", sr.TenantID, "revision", sr.Revision)
			}
		}
		next[sr.TenantID] = tp
	}
	t.gen = gen
	t.loaded.Store(&next)
	return nil
}

// Watch runs Sync every interval (2s if not positive) and whenever wake
// signals, until ctx ends; failures are logged and retried.
func (t *Tenants) Watch(ctx context.Context, interval time.Duration, wake <-chan struct{}) {
	every(ctx, interval, wake, func() {
		if err := t.Sync(ctx); err != nil && ctx.Err() == nil && t.Log != nil {
			t.Log.Warn("tenant policies not reloaded; retrying", "err", err)
		}
	})
}

func (t *Tenants) policyOf(tenantID string) (tp *tenantPolicy, synced bool) {
	m := t.loaded.Load()
	if m == nil {
		return nil, false
	}
	return (*m)[tenantID], true
}

// Decide asks the tenant's active revision, or the default, whether in may
// be sent; the decision names the revision that made it. Errors are as
// Engine.Decide's.
func (t *Tenants) Decide(ctx context.Context, tenantID string, in Input) (Decision, error) {
	tp, synced := t.policyOf(tenantID)
	switch {
	case !synced:
		return Decision{}, fmt.Errorf("%w: the tenants' policies are not loaded yet", ErrNoDecision)
	case tp == nil:
		return t.Default.Decide(ctx, in)
	case tp.rev == nil:
		return Decision{}, fmt.Errorf("%w: the tenant's policy revision %s did not load", ErrNoDecision, tp.stored.Revision)
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, fmt.Errorf("%w: %w", ErrNoDecision, err)
	}
	return tp.rev.decideOn(ctx, in)
}

// TenantStatus is what a tenant's compliance analyst sees of its policy:
// never another tenant's, nor where the operator keeps the default.
type TenantStatus struct {
	Tenant   string `json:"tenant"`
	Revision string `json:"revision"`
	// Default is true when the tenant decides with the deployment's
	// built-in rules, having uploaded none of its own (or gone back).
	Default     bool      `json:"default"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	ActivatedBy string    `json:"activated_by,omitempty"`
	Files       []string  `json:"files,omitempty"`
	// LastError says why the tenant's active revision does not load in
	// this process; its notices get no decision until it is replaced.
	LastError string `json:"last_error,omitempty"`
}

// Status reports the tenant's active revision as this process has it.
func (t *Tenants) Status(tenantID string) TenantStatus {
	tp, _ := t.policyOf(tenantID)
	if tp == nil {
		return TenantStatus{Tenant: tenantID, Revision: t.Default.Revision(), Default: true}
	}
	s := TenantStatus{Tenant: tenantID, Revision: tp.stored.Revision, ActivatedAt: tp.stored.ActivatedAt,
		ActivatedBy: tp.stored.ActivatedBy, Files: make([]string, len(tp.files))}
	for i, f := range tp.files {
		s.Files[i] = f.name
	}
	if tp.err != nil {
		s.LastError = tp.err.Error()
	}
	return s
}

// Evaluate is Engine.Evaluate for a tenant: with candidate nil it dry-runs
// the tenant's active revision, which is a caller's code and so runs in the
// sandbox, or the default when the tenant has none.
func (t *Tenants) Evaluate(ctx context.Context, tenantID string, candidate fs.FS, in json.RawMessage) (EvalResult, error) {
	if candidate != nil {
		return t.Default.Evaluate(ctx, candidate, in)
	}
	tp, synced := t.policyOf(tenantID)
	if !synced {
		return EvalResult{}, fmt.Errorf("%w: the tenants' policies are not loaded yet", ErrNoDecision)
	}
	if tp == nil {
		return t.Default.Evaluate(ctx, nil, in)
	}
	input, err := parseInput(in)
	if err != nil {
		return EvalResult{}, err
	}
	return t.Default.evaluateFiles(ctx, tp.files, in, input)
}

// Upload makes the policy files of candidate the tenant's active revision
// once they compile and their own *_test.rego tests pass, both in the
// Default engine's sandbox when it has one: an upload is a caller's code.
// A refused upload is recorded and gives an error wrapping ErrRejected (or
// ErrDryRunLimit) with the compiler's or the tests' messages; the tenant's
// active revision keeps deciding. On success this process decides with the
// new revision at once, other processes at their next Sync.
func (t *Tenants) Upload(ctx context.Context, tenantID string, candidate fs.FS) (TenantStatus, error) {
	files, rev, err := t.checkFiles(ctx, candidate)
	if err != nil {
		if !errors.Is(err, ErrRejected) && !errors.Is(err, ErrDryRunLimit) {
			return TenantStatus{}, err // not the upload's fault: nothing to record
		}
		if rerr := t.Store.PolicyRejected(ctx, tenantID, err.Error()); rerr != nil {
			return TenantStatus{}, rerr
		}
		return TenantStatus{}, refusal(err)
	}
	stored := TenantRevision{TenantID: tenantID, Revision: rev, Files: make(map[string]string, len(files))}
	for _, f := range files {
		stored.Files[f.name] = string(f.content)
	}
	if err := t.Store.ActivatePolicy(ctx, stored); err != nil {
		return TenantStatus{}, err
	}
	if err := t.Sync(ctx); err != nil {
		return TenantStatus{}, err
	}
	return t.Status(tenantID), nil
}

// Reset puts the tenant back on the default rules.
func (t *Tenants) Reset(ctx context.Context, tenantID string) (TenantStatus, error) {
	if err := t.Store.ResetPolicy(ctx, tenantID); err != nil {
		return TenantStatus{}, err
	}
	if err := t.Sync(ctx); err != nil {
		return TenantStatus{}, err
	}
	return t.Status(tenantID), nil
}

// messageOf is what the analyst reads of a refusal: the fault message
// when the error carries one.
func messageOf(err error) string {
	var m interface{ FaultMessage() string }
	if errors.As(err, &m) {
		return m.FaultMessage()
	}
	return err.Error()
}

// uploadable checks what the store can keep and a revision can be: text
// files, some Rego, within the limits.
func uploadable(files policyFiles) error {
	size := 0
	rego := false
	for _, f := range files {
		size += len(f.content)
		if !utf8.Valid(f.content) || strings.ContainsRune(string(f.content), 0) {
			return fault.Errorf(fault.Invalid, "policy file %s is not UTF-8 text", f.name)
		}
		rego = rego || (strings.HasSuffix(f.name, ".rego") && !isTestFile(f.name))
	}
	switch {
	case !rego:
		return fault.New(fault.Invalid, "the policy has no .rego module")
	case len(files) > maxUploadFiles:
		return fault.Errorf(fault.Invalid, "the policy has %d files; at most %d", len(files), maxUploadFiles)
	case size > maxUploadBytes:
		return fault.Errorf(fault.TooLarge, "the policy's files hold %d bytes; at most %d", size, maxUploadBytes)
	}
	return nil
}

// filesOf is a stored file map as a sorted snapshot.
func filesOf(m map[string]string) policyFiles {
	files := make(policyFiles, 0, len(m))
	for name, content := range m {
		files = append(files, policyFile{name: name, content: []byte(content)})
	}
	files.sort()
	return files
}

// BundleFS unpacks an OPA bundle (.tar.gz, as `opa build` writes it) into
// its policy files, for Tenants.Upload; its signature is not checked. A
// bundle that cannot be read gives an error wrapping ErrRejected.
func BundleFS(raw []byte) (fs.FS, error) {
	if len(raw) > maxBundleBytes {
		return nil, reject(fmt.Errorf("bundle is larger than %d bytes", maxBundleBytes))
	}
	files, err := Source{}.unpackBundle(raw)
	if err != nil {
		return nil, err
	}
	m := make(fstest.MapFS, len(files))
	for _, f := range files {
		m[f.name] = &fstest.MapFile{Data: f.content, Mode: 0o444}
	}
	return m, nil
}

// ActiveFiles returns the files of the tenant's own active revision, by
// name; ok is false when the tenant decides with the default rules.
func (t *Tenants) ActiveFiles(tenantID string) (files map[string]string, ok bool) {
	tp, _ := t.policyOf(tenantID)
	if tp == nil {
		return nil, false
	}
	files = make(map[string]string, len(tp.files))
	for _, f := range tp.files {
		files[f.name] = string(f.content)
	}
	return files, true
}

// Check loads candidate as Upload would (it compiles, its own *_test.rego
// tests pass; in the Default engine's sandbox when it has one) and returns
// the revision it would be, without recording or activating anything: the
// console's "run the tests". Errors are as Upload's.
func (t *Tenants) Check(ctx context.Context, candidate fs.FS) (string, error) {
	_, rev, err := t.checkFiles(ctx, candidate)
	if err != nil && (errors.Is(err, ErrRejected) || errors.Is(err, ErrDryRunLimit)) {
		return "", refusal(err)
	}
	return rev, err
}

// checkFiles reads candidate's files and loads them as a revision would,
// tests included; a refusal's error wraps ErrRejected or ErrDryRunLimit.
func (t *Tenants) checkFiles(ctx context.Context, candidate fs.FS) (policyFiles, string, error) {
	files, err := readPolicyFiles(candidate, true)
	if err != nil {
		return nil, "", fault.Errorf(fault.Invalid, "%w", err)
	}
	if err := uploadable(files); err != nil {
		return nil, "", err
	}
	rev, err := t.Default.checkUpload(ctx, files)
	return files, rev, err
}

// refusal is a refused candidate's error as the analyst reads it: 422 with
// the compiler's or the tests' messages, wrapping ErrRejected.
func refusal(err error) error {
	if !errors.Is(err, ErrRejected) {
		err = fmt.Errorf("%w: %w", ErrRejected, err)
	}
	return &fault.Error{Code: fault.Unprocessable, Msg: messageOf(err), Err: err}
}
