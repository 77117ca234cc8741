package policy_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/testenv"
)

// revisionStore is a migrated database with tenants "a" and "b", as every
// process of a deployment shares it.
func revisionStore(t *testing.T) *store.Store {
	t.Helper()
	ctx := context.Background()
	keys, _ := seal.ParseKeys("k1:" + seal.NewRandomKey())
	kr, err := seal.NewKeyring(keys, "", bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, testenv.NewDB(t), kr, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, id := range []string{"a", "b"} {
		if err := st.EnsureTenant(ctx, id, "Tenant "+id); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// tenantsOn is one process's view of the tenants' policies, deciding with
// version("a") by default.
func tenantsOn(t *testing.T, st *store.Store, def *policy.Engine) *policy.Tenants {
	t.Helper()
	if def == nil {
		def = mustNew(t, version("a"))
	}
	ts := &policy.Tenants{Default: def, Store: st}
	if err := ts.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ts
}

// A tenant that uploaded its own revision decides with it; another tenant
// keeps the default; going back to the default works; each sees only its
// own status.
func TestTenantsDecideWithTheirOwnRevision(t *testing.T) {
	ctx := audit.WithActor(context.Background(), "key:0123456789abcdef")
	st := revisionStore(t)
	ts := tenantsOn(t, st, nil)
	def, own := revisionOf(t, version("a")), revisionOf(t, version("b"))

	status, err := ts.Upload(ctx, "a", version("b"))
	if err != nil {
		t.Fatal(err)
	}
	if status.Default || status.Revision != own || status.ActivatedBy != "key:0123456789abcdef" || len(status.Files) != 3 {
		t.Errorf("status after upload: %+v", status)
	}
	d, err := ts.Decide(ctx, "a", policy.Input{NoticeType: "eob"})
	if err != nil || d.Revision != own || d.Allow || !strings.Contains(strings.Join(d.Deny, ","), "made by b") {
		t.Errorf("tenant a decided %+v, %v; want a denial by revision %s", d, err, own)
	}
	if policy.TenantRevisionSpecialises(ts, "a") {
		t.Error("tenant a's uploaded revision is specialised outside the sandbox")
	}
	d, err = ts.Decide(ctx, "b", policy.Input{NoticeType: "eob"})
	if err != nil || d.Revision != def || !d.Allow {
		t.Errorf("tenant b decided %+v, %v; want an allow by the default %s", d, err, def)
	}
	if s := ts.Status("b"); !s.Default || s.Revision != def || len(s.Files) != 0 {
		t.Errorf("tenant b's status shows %+v", s)
	}

	var actions []string
	if err := st.RawScan(ctx, &actions, `SELECT action || ' ' || actor FROM audit_log WHERE tenant_id = 'a' ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if len(actions) != 1 || actions[0] != "policy.activated key:0123456789abcdef" {
		t.Errorf("audit of tenant a: %q", actions)
	}

	if status, err = ts.Reset(ctx, "a"); err != nil || !status.Default || status.Revision != def {
		t.Fatalf("Reset: %+v, %v", status, err)
	}
	if d, err = ts.Decide(ctx, "a", policy.Input{NoticeType: "eob"}); err != nil || d.Revision != def {
		t.Errorf("after reset tenant a decided %+v, %v", d, err)
	}
}

// Before the first Sync a process does not know which tenants have their
// own rules, so it decides for none.
func TestTenantsDecideNothingBeforeTheyLoad(t *testing.T) {
	ts := &policy.Tenants{Default: mustNew(t, version("a")), Store: revisionStore(t)}
	if _, err := ts.Decide(context.Background(), "b", policy.Input{NoticeType: "eob"}); !errors.Is(err, policy.ErrNoDecision) {
		t.Fatalf("Decide before Sync: %v", err)
	}
}

// An upload whose own tests fail, or that does not compile, is refused in
// the sandbox with the tests' or compiler's messages, audited, and the
// tenant's revision keeps deciding.
func TestTenantUploadRejectedInSandbox(t *testing.T) {
	ctx := audit.WithActor(context.Background(), "key:00000000000000aa")
	st := revisionStore(t)
	ts := tenantsOn(t, st, sandboxed(t, policy.Sandbox{}))
	own := revisionOf(t, version("b"))
	if _, err := ts.Upload(ctx, "a", version("b")); err != nil {
		t.Fatal(err)
	}
	failing := version("c")
	failing["notice_test.rego"] = version("a")["notice_test.rego"]
	for name, tt := range map[string]struct {
		fsys fstest.MapFS
		text string
	}{
		"its tests fail": {failing, "test_version"},
		"syntax error":   {fstest.MapFS{"p.rego": {Data: []byte("package tidings.notice\n\ndecision := {\n")}}, "p.rego:"},
		"bomb":           {fstest.MapFS{"p.rego": {Data: []byte(sprintfBombPE)}}, "limit"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ts.Upload(ctx, "a", tt.fsys)
			if !errors.Is(err, policy.ErrRejected) || fault.CodeOf(err) != fault.Unprocessable || !strings.Contains(fault.MessageOf(err), tt.text) {
				t.Fatalf("Upload = %v (%s: %q), want a 422 rejection naming %q", err, fault.CodeOf(err), fault.MessageOf(err), tt.text)
			}
			if s := ts.Status("a"); s.Revision != own || s.Default {
				t.Errorf("status after a rejected upload: %+v", s)
			}
			d, err := ts.Decide(ctx, "a", policy.Input{NoticeType: "eob"})
			if err != nil || d.Revision != own {
				t.Errorf("after a rejected upload tenant a decided %+v, %v", d, err)
			}
		})
	}
	var rejected int
	if err := st.RawScan(ctx, &rejected, `SELECT count(*) FROM audit_log WHERE tenant_id = 'a' AND action = 'policy.rejected' AND actor = 'key:00000000000000aa'`); err != nil {
		t.Fatal(err)
	}
	if rejected != 3 {
		t.Errorf("%d rejections audited, want 3", rejected)
	}
}

// sprintfBombPE allocates without bound as soon as the policy is partially
// evaluated at load, before any input: a process that loaded it unchecked
// would be the one to die.
const sprintfBombPE = `package tidings.notice

pad(i) := sprintf("%0999999[1]d", [i])

big := [pad(i) | some i in numbers.range(1, 100000)]

decision := {"allow": count(big) == 0, "deny": [], "redact": [], "obligations": {}}
`

// A revision uploaded through one process decides in another (a worker)
// after its next Sync, which Watch runs on a notification, or on a poll
// when no notification comes.
func TestTenantsPickUpAnotherProcesssUpload(t *testing.T) {
	for name, notified := range map[string]bool{"notified": true, "polling": false} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := revisionStore(t)
			serve, worker := tenantsOn(t, st, nil), tenantsOn(t, st, nil)
			wctx, cancel := context.WithCancel(ctx)
			interval, wake := time.Hour, st.Listen(wctx, store.PolicyChannel)
			if !notified {
				interval, wake = 200*time.Millisecond, nil
			}
			done := make(chan struct{})
			go func() { defer close(done); worker.Watch(wctx, interval, wake) }()
			t.Cleanup(func() { cancel(); <-done })

			own := revisionOf(t, version("b"))
			if _, err := serve.Upload(ctx, "a", version("b")); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				d, err := worker.Decide(ctx, "a", policy.Input{NoticeType: "eob"})
				if err == nil && d.Revision == own {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the worker still decides %+v, %v for tenant a", d, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if _, err := serve.Reset(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			for !worker.Status("a").Default {
				if time.Now().After(deadline) {
					t.Fatal("the worker did not go back to the default")
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// The generation every process polls changes with each committed change.
func TestPolicyGenerationChanges(t *testing.T) {
	ctx := context.Background()
	st := revisionStore(t)
	ts := tenantsOn(t, st, nil)
	seen := map[int64]bool{}
	for _, step := range []func() error{
		func() error { return nil },
		func() error { _, err := ts.Upload(ctx, "a", version("b")); return err },
		func() error { _, err := ts.Upload(ctx, "b", version("b")); return err },
		func() error { _, err := ts.Reset(ctx, "a"); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
		gen, err := st.PolicyGeneration(ctx)
		if err != nil || seen[gen] {
			t.Fatalf("generation %d (%v) seen before", gen, err)
		}
		seen[gen] = true
	}
}
