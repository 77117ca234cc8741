package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// lowerPriority changes the priority of the process it runs in, so it is
// tried in a process of its own: this test runs TestLowerPriorityChild in
// a copy of the test binary.
func TestLowerPriority(t *testing.T) {
	before := threadsNice(os.Getpid())
	cmd := exec.Command(os.Args[0], "-test.run=^TestLowerPriorityChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "TIDINGS_TEST_NICE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestLowerPriorityChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	// This process kept its priority.
	if n := threadsNice(os.Getpid()); n.Threads == 0 || n.Low != before.Low || n.High != before.High {
		t.Errorf("the test process's threads: %v, before the child ran %v", n, before)
	}
}

func TestLowerPriorityChild(t *testing.T) {
	if os.Getenv("TIDINGS_TEST_NICE_CHILD") == "" {
		t.Skip("run by TestLowerPriority in a process of its own")
	}
	release := make(chan struct{})
	defer close(release)
	// Goroutines locked to threads of their own, blocked: the runtime must
	// start other threads meanwhile.
	holdThreads := func(k int) {
		for range k {
			ready := make(chan struct{})
			go func() {
				runtime.LockOSThread()
				close(ready)
				<-release
			}()
			<-ready
		}
	}
	holdThreads(3)
	start := threadsNice(os.Getpid())
	if start.Threads < 4 {
		t.Fatalf("only %v before", start)
	}
	lowest, threads, err := lowerPriority(10)
	if err != nil {
		t.Fatal(err)
	}
	after := threadsNice(os.Getpid())
	if lowest != max(10, start.Low) || after.Low < 10 || threads < start.Threads {
		t.Errorf("lowerPriority(10) = %d over %d threads; threads now %v (before %v)", lowest, threads, after, start)
	}
	// Threads started afterwards take the lowered priority.
	holdThreads(3)
	if later := threadsNice(os.Getpid()); later.Threads <= after.Threads || later.Low < 10 {
		t.Errorf("threads started after lowering: %v (before them %v)", later, after)
	}
	// It only lowers: a thread at 15 stays there.
	if _, _, err := lowerPriority(15); err != nil {
		t.Fatal(err)
	}
	lowest, _, err = lowerPriority(10)
	want := max(15, start.High)
	if n := threadsNice(os.Getpid()); err != nil || lowest != want || n.Low != want || n.High != want {
		t.Errorf("lowerPriority(10) after 15: %d, %v; threads %v; want all at %d", lowest, err, n, want)
	}
	// The system call's answer is 20 minus the nice value.
	if n, err := threadNice(os.Getpid()); err != nil || n != want {
		t.Errorf("threadNice: %d, %v; want %d", n, err, want)
	}
}
