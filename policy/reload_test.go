package policy_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/tidings-health/tidings/testenv"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tidings-health/tidings/policy"
)

// version is a policy whose every decision says which version made it: the
// redact list holds the version's name. Its test checks exactly that, so the
// test of one version fails against another's policy.
func version(name string) fstest.MapFS {
	return fstest.MapFS{
		"notice.rego": {Data: []byte(`package tidings.notice

decision := {"allow": allow, "deny": deny, "redact": [data.data.version], "obligations": {"portal_only": true}}

allow := count(deny) == 0

deny := [] if data.data.version == "a"

deny := ["made by b"] if data.data.version != "a"
`)},
		"data/version.json": {Data: fmt.Appendf(nil, `{"version": %q}`, name)},
		"notice_test.rego": {Data: fmt.Appendf(nil, `package tidings.notice_test

import data.tidings.notice

test_version if notice.decision.redact == [%q]
`, name)},
	}
}

// writeDir makes dir hold exactly the files of fsys.
func writeDir(t *testing.T, dir string, fsys fstest.MapFS) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	for name, f := range fsys {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// revisionOf is the revision an engine reports for fsys.
func revisionOf(t *testing.T, fsys fstest.MapFS) string {
	t.Helper()
	return mustNew(t, fsys).Revision()
}

// madeBy decides on a notice and returns the version named in the decision.
func madeBy(t *testing.T, e *policy.Engine) string {
	t.Helper()
	d, err := e.Decide(context.Background(), eobNotice())
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	if len(d.Redact) != 1 {
		t.Fatalf("decision %+v does not name its version", d)
	}
	return d.Redact[0]
}

func TestReload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeDir(t, dir, version("a"))
	e, err := policy.Open(ctx, policy.FromDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if got := madeBy(t, e); got != "a" {
		t.Fatalf("decided by %q, want a", got)
	}
	st := e.Status()
	if st.Revision != revisionOf(t, version("a")) || st.Source != "dir:"+dir || st.LoadedAt.IsZero() || st.LastError != "" {
		t.Fatalf("Status = %+v", st)
	}

	t.Run("a good change takes effect", func(t *testing.T) {
		writeDir(t, dir, version("b"))
		if err := e.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		if got := madeBy(t, e); got != "b" {
			t.Fatalf("decided by %q after reload, want b", got)
		}
		if st := e.Status(); st.Revision != revisionOf(t, version("b")) || st.LastError != "" {
			t.Fatalf("Status = %+v", st)
		}
	})

	rejected := []struct {
		name   string
		files  fstest.MapFS
		isTest bool
		want   []string
	}{
		{"syntax error", func() fstest.MapFS {
			m := version("c")
			m["notice.rego"] = &fstest.MapFile{Data: []byte("package tidings.notice\n\ndecision := {\n")}
			return m
		}(), false, []string{"notice.rego:", "rego_parse_error"}},
		{"compile error", func() fstest.MapFS {
			m := version("c")
			m["notice.rego"] = &fstest.MapFile{Data: []byte("package tidings.notice\n\ndecision := x if {\n\ty := 1\n}\n")}
			return m
		}(), false, []string{"notice.rego:3", "var x is unsafe"}},
		{"its own test fails", func() fstest.MapFS {
			m := version("c")
			m["notice_test.rego"] = version("a")["notice_test.rego"] // expects a, gets c
			return m
		}(), true, []string{"rego tests failed", "data.tidings.notice_test.test_version (notice_test.rego:5): FAIL"}},
	}
	for _, tt := range rejected {
		t.Run("rejected: "+tt.name, func(t *testing.T) {
			writeDir(t, dir, tt.files)
			before := time.Now()
			err := e.Reload(ctx)
			if !errors.Is(err, policy.ErrRejected) {
				t.Fatalf("Reload = %v, want ErrRejected", err)
			}
			if errors.Is(err, policy.ErrTestsFailed) != tt.isTest {
				t.Errorf("errors.Is(err, ErrTestsFailed) = %v, want %v", !tt.isTest, tt.isTest)
			}
			st := e.Status()
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) || !strings.Contains(st.LastError, want) {
					t.Errorf("error or Status().LastError lacks %q:\n%v\n%s", want, err, st.LastError)
				}
			}
			if st.LastErrorAt.Before(before) {
				t.Errorf("LastErrorAt = %v, before the reload at %v", st.LastErrorAt, before)
			}
			if st.Revision != revisionOf(t, version("b")) {
				t.Errorf("Status().Revision = %s, want b's", st.Revision)
			}
			if got := madeBy(t, e); got != "b" {
				t.Errorf("decided by %q after a rejected reload, want b", got)
			}
		})
	}

	t.Run("a fix clears the error", func(t *testing.T) {
		writeDir(t, dir, version("a"))
		if err := e.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		if st := e.Status(); st.LastError != "" || !st.LastErrorAt.IsZero() {
			t.Errorf("Status = %+v, want no error", st)
		}
		if got := madeBy(t, e); got != "a" {
			t.Errorf("decided by %q, want a", got)
		}
	})

	t.Run("an unchanged source is not recompiled", func(t *testing.T) {
		loaded := e.Status().LoadedAt
		if err := e.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		if again := e.Status().LoadedAt; !again.Equal(loaded) {
			t.Errorf("LoadedAt moved from %v to %v without a change", loaded, again)
		}
	})
}

func TestEngineWithoutPolicyFailsClosed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	broken := version("a")
	broken["notice.rego"] = &fstest.MapFile{Data: []byte("package tidings.notice\n\ndecision := {\n")}
	writeDir(t, dir, broken)

	if e, err := policy.Open(ctx, policy.FromDir(dir)); e != nil || !errors.Is(err, policy.ErrRejected) {
		t.Fatalf("Open = %v, %v; want nil and ErrRejected", e, err)
	}
	e := policy.NewEngine(policy.FromDir(dir))
	if err := e.Reload(ctx); !errors.Is(err, policy.ErrRejected) {
		t.Fatalf("Reload = %v, want ErrRejected", err)
	}
	d, err := e.Decide(ctx, eobNotice())
	if !errors.Is(err, policy.ErrNoDecision) || d.Allow {
		t.Fatalf("Decide without a policy = %+v, %v; want ErrNoDecision", d, err)
	}
	if _, err := e.Evaluate(ctx, nil, []byte(`{}`)); !errors.Is(err, policy.ErrNoDecision) {
		t.Errorf("Evaluate without a policy = %v, want ErrNoDecision", err)
	}
	if st := e.Status(); st.Revision != "" || !st.LoadedAt.IsZero() || !strings.Contains(st.LastError, "rego_parse_error") {
		t.Errorf("Status = %+v", st)
	}

	writeDir(t, dir, version("a"))
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got := madeBy(t, e); got != "a" {
		t.Errorf("decided by %q, want a", got)
	}

	missing := policy.NewEngine(policy.FromDir(filepath.Join(dir, "missing")))
	if err := missing.Reload(ctx); err == nil || missing.Status().LastError == "" {
		t.Errorf("a missing directory: Reload = %v, Status = %+v", err, missing.Status())
	}
}

func TestNewRunsThePoliciesTests(t *testing.T) {
	fsys := version("a")
	fsys["notice_test.rego"] = version("b")["notice_test.rego"]
	_, err := policy.New(context.Background(), fsys)
	if !errors.Is(err, policy.ErrTestsFailed) || !errors.Is(err, policy.ErrRejected) {
		t.Fatalf("New = %v, want ErrRejected and ErrTestsFailed", err)
	}
}

// TestReloadConcurrentDecisions reloads between two versions while
// goroutines decide, and checks that every decision is wholly one version's:
// its content matches the revision it names.
func TestReloadConcurrentDecisions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	versions := map[string]fstest.MapFS{"a": version("a"), "b": version("b")}
	byRevision := map[string]string{}
	for name, fsys := range versions {
		byRevision[revisionOf(t, fsys)] = name
	}
	writeDir(t, dir, versions["a"])
	e, err := policy.Open(ctx, policy.FromDir(dir))
	if err != nil {
		t.Fatal(err)
	}

	const deciders, reloads = 4, 40
	var stop atomic.Bool
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, deciders)
	for range deciders {
		wg.Go(func() {
			local := map[string]int{}
			defer func() {
				mu.Lock()
				for k, v := range local {
					seen[k] += v
				}
				mu.Unlock()
			}()
			for !stop.Load() {
				d, err := e.Decide(ctx, eobNotice())
				if err != nil {
					errs <- err
					return
				}
				name, ok := byRevision[d.Revision]
				if !ok {
					errs <- fmt.Errorf("decision from unknown revision %s", d.Revision)
					return
				}
				wantDeny := name != "a"
				if !slices.Equal(d.Redact, []string{name}) || (len(d.Deny) > 0) != wantDeny || d.Allow == wantDeny {
					errs <- fmt.Errorf("decision %+v mixes revision %s (version %s) with another's content", d, d.Revision, name)
					return
				}
				local[name]++
			}
		})
	}
	for i := range reloads {
		name := []string{"b", "a"}[i%2]
		writeDir(t, dir, versions[name])
		if err := e.Reload(ctx); err != nil {
			t.Errorf("reload %d: %v", i, err)
		}
		time.Sleep(time.Millisecond) // let the deciders see this revision
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("decisions per version during %d reloads: %v", reloads, seen)
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Errorf("decisions per version = %v; want both versions to have decided", seen)
	}
}

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, version("a"))
	var logs testenv.LogBuffer
	e, err := policy.Open(context.Background(), policy.FromDir(dir),
		policy.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Watch(ctx, 10*time.Millisecond)
	}()
	defer func() {
		cancel()
		<-done
	}()

	// Files change one by one, as a deploy would change them; Watch may see
	// the mix in between, which fails its tests and is rejected.
	switchTo := func(name string) {
		for _, f := range []string{"data/version.json", "notice_test.rego"} {
			replaceFile(t, dir, f, version(name)[f].Data)
		}
	}
	switchTo("b")
	revB := revisionOf(t, version("b"))
	waitFor(t, "the change to b", func() bool { return e.Revision() == revB && e.Status().LastError == "" })
	if got := madeBy(t, e); got != "b" {
		t.Errorf("decided by %q, want b", got)
	}
	if !strings.Contains(logs.String(), "revision="+revB) {
		t.Errorf("log lacks the new revision:\n%s", logs.String())
	}

	good := version("b")["notice.rego"].Data
	replaceFile(t, dir, "notice.rego", []byte("package tidings.notice\n\ndecision := {\n"))
	waitFor(t, "the rejection", func() bool { return strings.Contains(e.Status().LastError, "rego_parse_error") })
	first := e.Status()
	if first.Revision != revB {
		t.Errorf("Status after a broken change = %+v", first)
	}
	time.Sleep(50 * time.Millisecond)
	if again := e.Status(); !again.LastErrorAt.Equal(first.LastErrorAt) {
		t.Errorf("the same broken content was loaded again at %v", again.LastErrorAt)
	}
	if got := madeBy(t, e); got != "b" {
		t.Errorf("decided by %q after a broken change, want b", got)
	}
	if !strings.Contains(logs.String(), "rego_parse_error") {
		t.Errorf("log lacks the rejection:\n%s", logs.String())
	}

	// Putting the active content back clears the error without a reload.
	loaded := e.Status().LoadedAt
	replaceFile(t, dir, "notice.rego", good)
	waitFor(t, "the error to clear", func() bool { return e.Status().LastError == "" })
	if st := e.Status(); !st.LoadedAt.Equal(loaded) || st.Revision != revB {
		t.Errorf("Status = %+v, want b as loaded at %v", st, loaded)
	}

	switchTo("a")
	waitFor(t, "the change to a", func() bool { return e.Revision() == revisionOf(t, version("a")) })

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
}

// replaceFile swaps in a file's new content at once, as `mv` does.
func replaceFile(t *testing.T, dir, name string, content []byte) {
	t.Helper()
	tmp := filepath.Join(dir, ".tmp-"+filepath.Base(name))
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, filepath.FromSlash(name))); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDirSkipsHiddenEntries(t *testing.T) {
	dir := t.TempDir()
	fsys := version("a")
	// As a Kubernetes ConfigMap volume lays files out, plus an editor's backup.
	fsys["..2024_11_27_15_00_00.1/notice.rego"] = version("b")["notice.rego"]
	fsys["..2024_11_27_15_00_00.1/data/version.json"] = version("b")["data/version.json"]
	fsys[".notice.rego.orig"] = &fstest.MapFile{Data: []byte("not rego")}
	fsys[".old.rego"] = &fstest.MapFile{Data: []byte("package tidings.notice\n\ndecision := 1\n")}
	writeDir(t, dir, fsys)
	e, err := policy.Open(context.Background(), policy.FromDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() != revisionOf(t, version("a")) {
		t.Errorf("hidden files changed the revision")
	}
}
