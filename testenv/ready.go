package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// errExited means a server process ended while we waited for it to be ready.
var errExited = errors.New("server exited during start")

// waitReady polls check until it succeeds, the server exits, or ctx ends.
func waitReady(ctx context.Context, srv *child, check func(context.Context) error) error {
	delay := 20 * time.Millisecond
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := check(attempt)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-srv.done:
			return fmt.Errorf("%w (%s)", errExited, srv.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last attempt: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}

// tailOf returns the last n lines of s.
func tailOf(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
