package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A process gets exactly the environment it is given, nothing of ours.
func TestStartProcessEnvironment(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "env.log")
	t.Setenv("TESTENV_LEAK_PROBE", "leaked")
	p, err := StartProcess("/usr/bin/env", nil, []string{"ONLY=this"}, dir, log)
	if err != nil {
		t.Fatalf("StartProcess: %v", err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("env did not exit")
	}
	if st := p.State(); st == nil || !st.Success() {
		t.Fatalf("state %v", st)
	}
	out, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "ONLY=this\n" {
		t.Errorf("environment seen by the process:\n%s", out)
	}
}

// Stop ends a process that exits on SIGTERM cleanly, and kills one that
// ignores it together with the children it started.
func TestStartProcessStop(t *testing.T) {
	dir := t.TempDir()
	polite, err := StartProcess("/bin/sh", []string{"-c", `trap 'exit 0' TERM; while :; do sleep 0.05; done`}, nil, dir, filepath.Join(dir, "polite.log"))
	if err != nil {
		t.Fatalf("StartProcess: %v", err)
	}
	waitChildren(t, polite.PID())
	if st := polite.Stop(10 * time.Second); st == nil || !st.Success() {
		t.Errorf("a process that exits on SIGTERM: state %v", st)
	}

	stubborn, err := StartProcess("/bin/sh", []string{"-c", `trap '' TERM; sleep 60 & wait`}, nil, dir, filepath.Join(dir, "stubborn.log"))
	if err != nil {
		t.Fatalf("StartProcess: %v", err)
	}
	kids := waitChildren(t, stubborn.PID())
	start := time.Now()
	st := stubborn.Stop(200 * time.Millisecond)
	if st == nil || st.Success() {
		t.Errorf("a process that ignores SIGTERM: state %v, want killed", st)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("Stop took %s", time.Since(start))
	}
	for _, pid := range append(kids, stubborn.PID()) {
		if alive(pid) {
			t.Errorf("pid %d still running after Stop", pid)
		}
	}
	if st2 := stubborn.Stop(time.Second); st2 != st {
		t.Error("a second Stop returned another state")
	}
}

// waitChildren waits until pid has started a child (sh runs its sleep) and
// returns its children.
func waitChildren(t *testing.T, pid int) []int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if kids := childrenOf(pid); len(kids) > 0 {
			return kids
		}
	}
	t.Fatalf("pid %d started no child", pid)
	return nil
}
