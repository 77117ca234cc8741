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
		!strings.Contains(out.String(), "1 values still sealed with k1") {
		t.Fatalf("check before rotation: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := realMain(ctx, []string{"keys", "rotate", "--page", "1"}, &out, io.Discard); err != nil {
		t.Fatalf("rotate: %v\n%s", err, out.String())
	}
	for _, want := range []string{"contacts: 1 re-sealed with k2, 0 could not be opened", "rotated: 1 values re-sealed", "no rows sealed with k1"} {
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
