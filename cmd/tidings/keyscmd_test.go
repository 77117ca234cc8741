package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/testenv"
)

// keys rotate moves every value from k1 to k2 and says so; then, with k1
// removed from the configuration, --check finds nothing left and the
// contact still opens.
func TestKeysRotateCommand(t *testing.T) {
	ctx := context.Background()
	dbURL := testenv.NewDB(t)
	k1, k2, index := seal.NewRandomKey(), seal.NewRandomKey(), seal.NewRandomKey()
	t.Setenv("TIDINGS_DATABASE_URL", dbURL)
	t.Setenv("TIDINGS_BLIND_INDEX_KEY", index)
	t.Setenv("TIDINGS_SEAL_KEYS", "k1:"+k1)
	t.Setenv("TIDINGS_SEAL_PRIMARY", "")
	st := openWithEnv(t)
	if err := st.EnsureTenant(ctx, "t1", "T1"); err != nil {
		t.Fatal(err)
	}
	if err := st.UpsertContact(ctx, "t1", "Patient/p1", delivery.Contact{Email: "p1@example.org", Source: "api"}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	t.Setenv("TIDINGS_SEAL_KEYS", "k1:"+k1+",k2:"+k2)
	t.Setenv("TIDINGS_SEAL_PRIMARY", "k2")
	var out bytes.Buffer
	if err := realMain(ctx, []string{"keys", "rotate", "--check"}, &out, io.Discard); !errors.Is(err, errStaleValues) ||
		!strings.Contains(out.String(), "2 values still sealed with k1") {
		t.Fatalf("check before rotation: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := realMain(ctx, []string{"keys", "rotate", "--page", "1"}, &out, io.Discard); err != nil {
		t.Fatalf("rotate: %v\n%s", err, out.String())
	}
	// The contact's email and its patient reference.
	for _, want := range []string{"contacts: 2 re-sealed with k2, 0 could not be opened", "rotated: 2 values re-sealed", "no rows sealed with k1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("rotate output lacks %q:\n%s", want, out.String())
		}
	}

	t.Setenv("TIDINGS_SEAL_KEYS", "k2:"+k2)
	t.Setenv("TIDINGS_SEAL_PRIMARY", "")
	out.Reset()
	if err := realMain(ctx, []string{"keys", "rotate", "--check"}, &out, io.Discard); err != nil {
		t.Fatalf("check after rotation: %v\n%s", err, out.String())
	}
	st = openWithEnv(t)
	defer st.Close()
	if c, err := st.ContactFor(ctx, "t1", "", "Patient/p1"); err != nil || c.Email != "p1@example.org" {
		t.Fatalf("contact after k1 was removed: %v", err)
	}
}

// keys reindex moves a tenant's indexes to the new index key version,
// printing a line per page that names no patient, and audits it; then,
// with version 1 removed, the tenant's contact is still found.
func TestKeysReindexCommand(t *testing.T) {
	ctx := context.Background()
	dbURL := testenv.NewDB(t)
	index1, index2 := seal.NewRandomKey(), seal.NewRandomKey()
	t.Setenv("TIDINGS_DATABASE_URL", dbURL)
	t.Setenv("TIDINGS_SEAL_KEYS", "k1:"+seal.NewRandomKey())
	t.Setenv("TIDINGS_BLIND_INDEX_KEY", index1)
	st := openWithEnv(t)
	for _, tenant := range []string{"t1", "t2"} {
		if err := st.EnsureTenant(ctx, tenant, tenant); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"Patient/p1", "Patient/p2"} {
			if err := st.UpsertContact(ctx, tenant, p, delivery.Contact{Email: "reindex-canary@example.org", Source: "api"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	st.Close()

	t.Setenv("TIDINGS_BLIND_INDEX_KEY", "1:"+index1+",2:"+index2)
	t.Setenv("TIDINGS_BLIND_INDEX_PRIMARY", "2")
	var out bytes.Buffer
	if err := realMain(ctx, []string{"keys", "reindex", "--tenant", "t1", "--check"}, &out, io.Discard); !errors.Is(err, errStaleIndexes) ||
		!strings.Contains(out.String(), "t1 contacts: 2 rows still on v1") {
		t.Fatalf("check before reindex: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := realMain(ctx, []string{"keys", "reindex", "--tenant", "t1", "--page", "1"}, &out, io.Discard); err != nil {
		t.Fatalf("reindex: %v\n%s", err, out.String())
	}
	for _, want := range []string{"t1 contacts: page 1, 1 re-keyed to v2", "t1 contacts: page 2, 2 re-keyed to v2", "t1: 2 rows re-keyed to v2, 0 left", "t1: every row on v2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("reindex output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "Patient/") || strings.Contains(out.String(), "canary") {
		t.Errorf("reindex output names a patient:\n%s", out.String())
	}
	out.Reset()
	if err := realMain(ctx, []string{"keys", "reindex", "--all", "--check"}, &out, io.Discard); !errors.Is(err, errStaleIndexes) ||
		!strings.Contains(out.String(), "t2 contacts: 2 rows still on v1") || !strings.Contains(out.String(), "t1: every row on v2") {
		t.Fatalf("check of every tenant: %v\n%s", err, out.String())
	}

	t.Setenv("TIDINGS_BLIND_INDEX_KEY", "2:"+index2)
	t.Setenv("TIDINGS_BLIND_INDEX_PRIMARY", "")
	st = openWithEnv(t)
	defer st.Close()
	if c, err := st.ContactFor(ctx, "t1", "", "Patient/p2"); err != nil || c.Email != "reindex-canary@example.org" {
		t.Fatalf("contact after version 1 was removed: %v", err)
	}
	var n int64
	if err := st.RawScan(ctx, &n, `SELECT count(*) FROM audit_log WHERE tenant_id = 't1' AND action = 'index.reindexed' AND subject_id = 'v2'`); err != nil || n != 1 {
		t.Errorf("%d audit rows of the reindex (%v)", n, err)
	}
}

func openWithEnv(t *testing.T) *store.Store {
	t.Helper()
	cfg, err := loadConfig(config.RoleMigrate)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := cfg.Keyring()
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), cfg.DatabaseURL, keys, store.Options{MaxOpenConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	return st
}
