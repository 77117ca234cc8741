package policy

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// limitProcess caps this process's address space at what it has mapped now
// plus memory (RLIMIT_AS counts mappings, and the runtime has already
// mapped its binary, stacks and first heap arenas), and its CPU time at a
// little over timeout.
func limitProcess(memory int64, timeout time.Duration) error {
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return fmt.Errorf("policy sandbox: %w", err)
	}
	pages, err := strconv.ParseInt(string(bytes.Fields(statm)[0]), 10, 64)
	if err != nil {
		return fmt.Errorf("policy sandbox: /proc/self/statm: %w", err)
	}
	as := uint64(pages*int64(os.Getpagesize()) + memory)
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: as, Max: as}); err != nil {
		return fmt.Errorf("policy sandbox: limit address space: %w", err)
	}
	// The runtime ignores SIGXCPU at the soft limit; the kernel kills at
	// the hard one.
	cpu := uint64(timeout/time.Second) + 2
	if err := syscall.Setrlimit(syscall.RLIMIT_CPU, &syscall.Rlimit{Cur: cpu, Max: cpu}); err != nil {
		return fmt.Errorf("policy sandbox: limit CPU time: %w", err)
	}
	return nil
}
