package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tidings-health/tidings/fault"
)

// ErrDryRunLimit means a candidate's dry run was stopped because it went
// over its time or memory limit.
var ErrDryRunLimit = errors.New("policy: dry run over its limit")

// The limits of a sandboxed dry run unless a Sandbox sets its own.
const (
	DefaultSandboxMemory  = 512 << 20
	DefaultSandboxTimeout = 5 * time.Second
)

// maxSandboxReply bounds what the parent reads of a child's answer: a
// decision and the rules that fired are a few kilobytes.
const maxSandboxReply = 4 << 20

// Sandbox runs candidate dry runs in a child process, so that a candidate
// that allocates without bound or never finishes costs that process, not
// the one that takes intake. The child is a program that calls
// ServeSandbox, e.g. the tidings binary itself with "policy", "sandbox".
type Sandbox struct {
	Path string   // the program, e.g. os.Executable()
	Args []string // its arguments before the limits, e.g. "policy", "sandbox"
	// Memory caps the child's address space beyond what it has mapped when
	// it starts, in bytes (DefaultSandboxMemory when zero).
	Memory int64
	// Timeout bounds a dry run when ctx has no sooner deadline
	// (DefaultSandboxTimeout when zero). The child is killed at the
	// deadline.
	Timeout time.Duration
	// Children caps how many children run at once in this process
	// (DefaultSandboxChildren when zero); a caller waits for a free one
	// until its ctx ends, then gets ErrSandboxBusy.
	Children int

	slots chan struct{}
}

// DefaultSandboxChildren is how many sandbox children a process runs at
// once unless a Sandbox says otherwise: each may take DefaultSandboxMemory.
const DefaultSandboxChildren = 2

// ErrSandboxBusy means every sandbox child was in use for as long as the
// caller could wait.
var ErrSandboxBusy = errors.New("policy: every sandbox is busy")

// WithSandbox makes Evaluate compile and run candidates, and CheckUpload
// test tenants' uploads, in s's child process. The default revision's dry
// runs stay in this process: the operator loaded that policy, and it
// already decides every notice here.
func WithSandbox(s Sandbox) Option {
	return func(e *Engine) {
		if s.Children <= 0 {
			s.Children = DefaultSandboxChildren
		}
		s.slots = make(chan struct{}, s.Children)
		e.sandbox = &s
	}
}

// sandboxRequest is what the parent writes to the child's stdin. The input
// goes only here, never in arguments or the environment: it may be PHI.
type sandboxRequest struct {
	Files []sandboxFile   `json:"files"`
	Input json.RawMessage `json:"input,omitempty"`
	// Check asks only whether the files would load as a revision: they
	// compile, their tests pass, and their partial evaluation finishes.
	Check bool `json:"check,omitempty"`
}

type sandboxFile struct {
	Name    string `json:"name"`
	Content []byte `json:"content"`
}

// sandboxReply is what the child writes to its stdout: the dry run's
// result, and its error when there was one.
type sandboxReply struct {
	Allow       bool          `json:"allow"`
	Deny        []string      `json:"deny"`
	Redact      []string      `json:"redact"`
	Obligations []string      `json:"obligations"`
	Revision    string        `json:"revision"`
	Fired       []string      `json:"fired"`
	Error       *sandboxError `json:"error,omitempty"`
}

// sandboxError is an error of the dry run itself, with the sentinels it
// wrapped in the child so that errors.Is holds in the parent too.
type sandboxError struct {
	Message     string `json:"message"`
	Rejected    bool   `json:"rejected,omitempty"`
	TestsFailed bool   `json:"tests_failed,omitempty"`
	NoDecision  bool   `json:"no_decision,omitempty"`
}

func (s *Sandbox) memory() int64 {
	if s.Memory > 0 {
		return s.Memory
	}
	return DefaultSandboxMemory
}

func (s *Sandbox) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultSandboxTimeout
}

// evaluate runs one dry run of files on in in a child process.
func (s *Sandbox) evaluate(ctx context.Context, files policyFiles, in json.RawMessage) (EvalResult, error) {
	reply, err := s.run(ctx, sandboxRequest{Files: toSandboxFiles(files), Input: in})
	if err != nil {
		return EvalResult{}, err
	}
	res := EvalResult{Decision: Decision{Allow: reply.Allow, Deny: reply.Deny, Redact: reply.Redact,
		Obligations: reply.Obligations, Revision: reply.Revision}, Fired: reply.Fired}
	if reply.Error != nil {
		return res, reply.Error.err()
	}
	return res, nil
}

// check loads files as a revision in a child process, tests included, and
// returns the revision's id.
func (s *Sandbox) check(ctx context.Context, files policyFiles) (string, error) {
	reply, err := s.run(ctx, sandboxRequest{Files: toSandboxFiles(files), Check: true})
	if err != nil {
		return "", err
	}
	if reply.Error != nil {
		return "", reply.Error.err()
	}
	return reply.Revision, nil
}

func toSandboxFiles(files policyFiles) []sandboxFile {
	out := make([]sandboxFile, len(files))
	for i, f := range files {
		out[i] = sandboxFile{Name: f.name, Content: f.content}
	}
	return out
}

// run serves req in a child process once one of the process's slots is
// free.
func (s *Sandbox) run(ctx context.Context, req sandboxRequest) (sandboxReply, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return sandboxReply{}, fmt.Errorf("policy: dry run request: %w", err)
	}
	if s.slots != nil {
		select {
		case s.slots <- struct{}{}:
			defer func() { <-s.slots }()
		case <-ctx.Done():
			return sandboxReply{}, &fault.Error{Code: fault.Unavailable,
				Msg: "every policy sandbox is busy; retry shortly", Err: fmt.Errorf("%w: %w", ErrSandboxBusy, ctx.Err())}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	limit := s.timeout()
	if dl, ok := ctx.Deadline(); ok {
		limit = time.Until(dl)
	}
	args := append(append([]string{}, s.Args...),
		"-memory", strconv.FormatInt(s.memory(), 10), "-timeout", limit.Round(time.Millisecond).String())
	cmd := exec.CommandContext(ctx, s.Path, args...)
	cmd.Env = childEnv()
	cmd.Stdin = bytes.NewReader(body)
	stdout := &cappedBuffer{max: maxSandboxReply}
	stderr := &cappedBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	start := time.Now()
	err = cmd.Run()
	// The child's stderr is read only for the runtime's own out-of-memory
	// report and is never logged or returned: a crash there could print
	// anything the candidate built from the input.
	switch {
	case ctx.Err() != nil:
		return sandboxReply{}, overLimit("the dry run exceeded its time limit", fmt.Errorf("%w: killed after %s: %w", ErrDryRunLimit, time.Since(start).Round(time.Millisecond), ctx.Err()))
	case err != nil && outOfMemory(cmd.ProcessState, stderr.Bytes()):
		return sandboxReply{}, overLimit("the dry run exceeded its memory limit", fmt.Errorf("%w: %d bytes: %w", ErrDryRunLimit, s.memory(), err))
	case err != nil:
		return sandboxReply{}, fmt.Errorf("policy: dry run process: %w", err)
	case stdout.over:
		return sandboxReply{}, overLimit("the dry run's result is too large", fmt.Errorf("%w: reply over %d bytes", ErrDryRunLimit, maxSandboxReply))
	}
	var reply sandboxReply
	if err := json.Unmarshal(stdout.Bytes(), &reply); err != nil {
		return sandboxReply{}, fmt.Errorf("policy: dry run process: malformed reply: %w", err)
	}
	return reply, nil
}

func overLimit(msg string, err error) error {
	return &fault.Error{Code: fault.Unprocessable, Msg: msg, Err: err}
}

// childEnv is this process's environment without Tidings' configuration,
// which holds database credentials and keys the child has no use for.
func childEnv() []string {
	env := os.Environ()
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "TIDINGS_") {
			out = append(out, kv)
		}
	}
	return out
}

// outOfMemory tells a child that hit its memory cap: the Go runtime reports
// a failed allocation or thread start and exits, or the kernel's OOM killer
// sends SIGKILL (the parent's own kill at the deadline is told apart by
// ctx, and the child's CPU-time backstop only fires after that deadline).
func outOfMemory(ps *os.ProcessState, stderr []byte) bool {
	for _, report := range []string{"out of memory", "cannot allocate memory", "failed to create new OS thread"} {
		if bytes.Contains(stderr, []byte(report)) {
			return true
		}
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func (e *sandboxError) err() error {
	var is []error
	if e.Rejected {
		is = append(is, ErrRejected)
	}
	if e.TestsFailed {
		is = append(is, ErrTestsFailed)
	}
	if e.NoDecision {
		is = append(is, ErrNoDecision)
	}
	return remoteError{msg: e.Message, is: is}
}

// remoteError is an error the child reported, with its text and its
// sentinels. A rejection is the analyst's to fix, as in the parent.
type remoteError struct {
	msg string
	is  []error
}

func (r remoteError) Error() string   { return r.msg }
func (r remoteError) Unwrap() []error { return r.is }

func (r remoteError) FaultCode() fault.Code {
	if errors.Is(r, ErrRejected) {
		return fault.Unprocessable
	}
	return fault.Internal
}

func (r remoteError) FaultMessage() string { return r.msg }

// cappedBuffer keeps the first max bytes written to it and notes that
// there were more.
type cappedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); len(p) > room {
		b.over = true
		b.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

// ServeSandbox is the child's side of a sandboxed dry run: args carry the
// limits (-memory bytes, -timeout duration), stdin one request, and stdout
// gets one reply. It sets its limits before it reads anything: one
// processor, a soft heap limit, a hard cap on address space, and a cap on
// CPU time a little over the timeout, which ends the child should its
// parent die before killing it at the deadline. An error means the request could not be served at all; the dry
// run's own outcome, rejection included, is in the reply.
func ServeSandbox(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("policy sandbox", flag.ContinueOnError)
	memory := fs.Int64("memory", DefaultSandboxMemory, "memory cap in bytes")
	timeout := fs.Duration("timeout", DefaultSandboxTimeout, "time limit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	runtime.GOMAXPROCS(1)
	// The soft limit makes the collector work before the hard cap is near,
	// so that garbage does not count against the candidate.
	debug.SetMemoryLimit(*memory / 2)
	if err := limitProcess(*memory, *timeout); err != nil {
		return err
	}

	var req sandboxRequest
	if err := json.NewDecoder(io.LimitReader(stdin, maxBundleBytes)).Decode(&req); err != nil {
		return fmt.Errorf("policy sandbox: read request: %w", err)
	}
	files := make(policyFiles, len(req.Files))
	for i, f := range req.Files {
		files[i] = policyFile{name: f.Name, content: f.Content}
	}
	files.sort()
	var res EvalResult
	var err error
	if req.Check {
		var rev *revision
		if rev, err = checkCandidate(ctx, files); err == nil {
			res.Decision.Revision = rev.id
		}
	} else {
		var input ast.Value
		if input, err = parseInput(req.Input); err == nil {
			res, err = dryRunCandidate(ctx, files, input)
		}
	}
	d := res.Decision
	reply := sandboxReply{Allow: d.Allow, Deny: d.Deny, Redact: d.Redact, Obligations: d.Obligations,
		Revision: d.Revision, Fired: res.Fired}
	if err != nil {
		reply.Error = &sandboxError{Message: err.Error(), Rejected: errors.Is(err, ErrRejected),
			TestsFailed: errors.Is(err, ErrTestsFailed), NoDecision: errors.Is(err, ErrNoDecision)}
	}
	return json.NewEncoder(stdout).Encode(reply)
}
