package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func writeExecutable(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestFindPostgresMissing(t *testing.T) {
	empty := t.TempDir()
	_, err := findPostgres(empty, filepath.Join(empty, "*", "bin"))
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("err = %v, want ErrNotInstalled", err)
	}
	for _, want := range []string{"initdb", "apt-get install -y postgresql"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestFindPostgresPicksNewestThenPath(t *testing.T) {
	lib := t.TempDir()
	for _, v := range []string{"9.6", "13", "15"} {
		writeExecutable(t, filepath.Join(lib, v, "bin", "initdb"))
		writeExecutable(t, filepath.Join(lib, v, "bin", "postgres"))
	}
	writeExecutable(t, filepath.Join(lib, "16", "bin", "initdb")) // no server: skipped
	glob := filepath.Join(lib, "*", "bin")

	got, err := findPostgres(t.TempDir(), glob)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(lib, "15", "bin", "initdb"); got.initdb != want || got.postgres != filepath.Join(lib, "15", "bin", "postgres") {
		t.Errorf("found %+v, want version 15", got)
	}

	// An initdb on PATH (a symlink, as some machines have) wins, and its
	// postgres comes from the same folder.
	pathDir := t.TempDir()
	if err := os.Symlink(filepath.Join(lib, "13", "bin", "initdb"), filepath.Join(pathDir, "initdb")); err != nil {
		t.Fatal(err)
	}
	got, err = findPostgres(pathDir, glob)
	if err != nil {
		t.Fatal(err)
	}
	if got.postgres != filepath.Join(lib, "13", "bin", "postgres") {
		t.Errorf("with initdb 13 on PATH found %+v", got)
	}
}

func TestFindRedis(t *testing.T) {
	empty := t.TempDir()
	_, err := findRedis(empty, nil)
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "redis-server") ||
		!strings.Contains(err.Error(), "apt-get install -y redis-server") {
		t.Errorf("err = %v, want ErrNotInstalled naming redis-server and the apt command", err)
	}
	fallback := filepath.Join(t.TempDir(), "redis-server")
	writeExecutable(t, fallback)
	if got, err := findRedis(empty, []string{fallback}); err != nil || got != fallback {
		t.Errorf("findRedis with fallback = %q, %v", got, err)
	}
	onPath := t.TempDir()
	writeExecutable(t, filepath.Join(onPath, "redis-server"))
	if got, err := findRedis(onPath, []string{fallback}); err != nil || got != filepath.Join(onPath, "redis-server") {
		t.Errorf("findRedis with PATH = %q, %v", got, err)
	}
}

func TestCheckReachable(t *testing.T) {
	cred := &syscall.Credential{Uid: 54321, Gid: 54321} // a user owning nothing
	open, err := os.MkdirTemp("", "testenv-reach-")     // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(open) })
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	closed := filepath.Join(open, "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(closed, "inner")
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkReachable(open, cred); err != nil {
		t.Errorf("open folder: %v", err)
	}
	err = checkReachable(inner, cred)
	if err == nil || !strings.Contains(err.Error(), "cannot enter "+closed) {
		t.Errorf("folder under a 0700 one: %v, want an error naming %s", err, closed)
	}
	if err := checkReachable(inner, nil); err != nil {
		t.Errorf("running as ourselves: %v", err)
	}
}

func TestDBName(t *testing.T) {
	tests := []struct {
		test string
		seq  uint64
		want string
	}{
		{"TestStore", 1, "t_teststore_1"},
		{"TestStore/insert_then_read#01", 7, "t_teststore_insert_then_read_01_7"},
		{"TestÜber/ünï cödé", 2, "t_test_ber_n_c_d_2"},
		{"Test/" + strings.Repeat("x", 100), 123456, "t_test_" + strings.Repeat("x", 63-len("t_test_")-len("_123456")) + "_123456"},
	}
	for _, tt := range tests {
		got := dbName(tt.test, tt.seq)
		if got != tt.want {
			t.Errorf("dbName(%q, %d) = %q, want %q", tt.test, tt.seq, got, tt.want)
		}
		if len(got) > 63 {
			t.Errorf("dbName(%q) is %d bytes, over PostgreSQL's 63", tt.test, len(got))
		}
	}
}
