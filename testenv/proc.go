package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNotInstalled means a server binary (or the system user it runs as) is
// missing from this machine; the message names it and the apt-get command.
var ErrNotInstalled = errors.New("testenv: server not installed")

// ownerFile, written in every folder this package creates, holds the pid of
// the process that made it, so a later run can remove folders whose owner
// died before it could clean up (see removeStale).
const ownerFile = "owner.pid"

// child is a server process started by this package and reaped by it.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
}

// startChild starts a long-running server process in its own process group,
// with environment env and its stdout and stderr appended to logPath.
//
// The child gets pdeathsig: the kernel sends it that signal when the thread
// that forked it exits, so a test binary that dies (panic, timeout, SIGKILL)
// takes its servers along. Because the signal is tied to the thread rather
// than the process, the fork happens on a goroutine that keeps its OS thread
// locked until the child has been reaped.
func startChild(bin string, args, env []string, dir, logPath string, cred *syscall.Credential, pdeathsig syscall.Signal) (*child, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testenv: open server log: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  pdeathsig,
		Credential: cred,
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: when this goroutine returns, the runtime retires
		// the thread, which is harmless once the child is gone.
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait() // the exit status is read from cmd.ProcessState
		close(c.done)
	}()
	err = <-started
	if closeErr := logf.Close(); err == nil && closeErr != nil {
		// The child holds its own copy of the descriptor.
		err = closeErr
	}
	if err != nil {
		if c.cmd.Process != nil {
			c.stop(0)
		}
		return nil, fmt.Errorf("testenv: start %s: %w", filepath.Base(bin), err)
	}
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop asks the server to end with each of signals in turn, giving it grace
// after each, then kills it. It returns once the server has been reaped and
// neither its process group nor its children are left.
//
// Killing the group is not enough for PostgreSQL: each backend calls setsid
// and leads a group of its own. A postmaster that exits on its own waits for
// its backends, so only the last resort below has to find them, by parent.
func (c *child) stop(grace time.Duration, signals ...syscall.Signal) {
	pgid := c.pid() // Setpgid made the server the leader of its own group.
	for _, sig := range signals {
		if c.exited() {
			break
		}
		_ = syscall.Kill(c.pid(), sig)
		select {
		case <-c.done:
		case <-time.After(grace):
		}
	}
	if !c.exited() {
		kids := childrenOf(c.pid())
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		for _, pid := range kids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		<-c.done
	}
	// A server that crashed may have left workers of its group behind; they
	// still carry its group id, and Linux does not give that id to a new
	// process while any of them lives.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		kid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readProcStat(kid); ok && st.ppid == pid {
			kids = append(kids, kid)
		}
	}
	return kids
}

// procStat is the part of /proc/<pid>/stat this package reads.
type procStat struct {
	state string // R, S, D, Z (zombie), ...
	ppid  int
	pgrp  int
}

func readProcStat(pid int) (procStat, bool) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	s := string(raw)
	// "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 3 {
		return procStat{}, false
	}
	ppid, err1 := strconv.Atoi(fields[1])
	pgrp, err2 := strconv.Atoi(fields[2])
	if err1 != nil || err2 != nil {
		return procStat{}, false
	}
	return procStat{state: fields[0], ppid: ppid, pgrp: pgrp}, true
}

// childEnv is the environment for server processes: the caller's, with
// English messages (the log tail in errors stays readable) and without
// variables that change a PostgreSQL server's defaults.
func childEnv() []string {
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LANG=C", "LC_ALL=C")
}

// freePort asks the kernel for a loopback port nobody listens on. Another
// process may take it before the server binds it; callers retry on
// "Address already in use".
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("testenv: find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("testenv: find a free port: %w", err)
	}
	return port, nil
}

// logTail returns the last lines of a server log, for error messages.
func logTail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	data = bytes.TrimRight(data, "\n")
	if len(data) == 0 {
		return "(log is empty)"
	}
	parts := bytes.Split(data, []byte("\n"))
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return string(bytes.Join(parts, []byte("\n")))
}

// makeDir creates a fresh folder named prefix* under parent ("" means
// os.TempDir()) and records this process as its owner.
func makeDir(parent, prefix string) (string, error) {
	if parent == "" {
		parent = os.TempDir()
	}
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", fmt.Errorf("testenv: create folder: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("testenv: create folder: %w", err)
	}
	return dir, nil
}

// removeStale deletes folders this package made under parent for processes
// that no longer exist: a test binary killed by a timeout or a signal
// cannot clean up after itself, and its servers died with it (pdeathsig).
func removeStale(parent string) {
	if parent == "" {
		parent = os.TempDir()
	}
	for _, prefix := range []string{testPrefix, pgPrefix, redisPrefix} {
		dirs, _ := filepath.Glob(filepath.Join(parent, prefix+"*"))
		for _, dir := range dirs {
			raw, err := os.ReadFile(filepath.Join(dir, ownerFile))
			if err != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
			if err != nil || pid <= 0 {
				continue
			}
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				_ = os.RemoveAll(dir)
			}
		}
	}
}
