package testenv

import (
	"os"
	"syscall"
	"time"
)

// Process is a long-running program started by StartProcess: a service
// under measurement, say, run as its own process as it would be deployed.
type Process struct{ c *child }

// StartProcess starts bin with args and exactly the environment env (nothing
// of the caller's is added) in its own process group, in folder dir, with its
// stdout and stderr appended to logPath. Like the servers of this package it
// is killed when the calling process dies, so an aborted caller leaves nothing
// running.
func StartProcess(bin string, args, env []string, dir, logPath string) (*Process, error) {
	c, err := startChild(bin, args, env, dir, logPath, nil, syscall.SIGKILL)
	if err != nil {
		return nil, err
	}
	return &Process{c: c}, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.c.pid() }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.c.done }

// Stop sends SIGTERM, waits up to grace for the process to exit, then kills
// its process group. It returns once nothing of the group is left, with the
// exit state: State().Success() tells a clean exit. Calling it again, or after
// the process exited on its own, only returns the state.
func (p *Process) Stop(grace time.Duration) *os.ProcessState {
	p.c.stop(grace, syscall.SIGTERM)
	return p.c.cmd.ProcessState
}

// State is the exit state once Done is closed, nil before.
func (p *Process) State() *os.ProcessState {
	select {
	case <-p.c.done:
		return p.c.cmd.ProcessState
	default:
		return nil
	}
}
