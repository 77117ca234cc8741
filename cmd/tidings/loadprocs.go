package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/tidings-health/tidings/mailcatch"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/testenv"
	"github.com/tidings-health/tidings/worker"
)

const (
	loadTenant       = "dev"
	loadSubscription = "load-eob"
	loadDatabase     = "tidings"
	baselineDatabase = "load_baseline"
	// loadRole is the database user of the load command's own queries, so
	// that pg_stat_statements tells them from those of serve and worker
	// (which connect as the cluster's superuser, as migrations do).
	loadRole = "tidings_load"
	// loadEmail is the load patient's address: mail for the reserved
	// domain can only ever reach the local catcher.
	loadEmail = "load-patient@" + devPlaceholderDomain
	// stopGrace is how long serve and worker get to exit after SIGTERM:
	// longer than the worker's own 30 s shutdown timeout.
	stopGrace = 45 * time.Second
	// statsSettle is how long a Postgres backend may hold its transaction
	// counts before reporting them (PGSTAT_IDLE_INTERVAL, 10 s), and a bit.
	statsSettle = 11 * time.Second
)

// serviceSettings are the TIDINGS_* settings a flag changed; zero: the
// service's default, not set at all.
type serviceSettings struct {
	RatePerSecond float64
	Concurrency   int
	WorkerNice    string // TIDINGS_WORKER_NICE; "": the worker's default
	CPUProfile    string // TIDINGS_CPU_PROFILE
}

// procStack is Tidings as deployed, on one machine: PostgreSQL, Redis and a
// STARTTLS mail catcher, and `tidings serve` and `tidings worker` as
// separate processes of this binary configured only by TIDINGS_* variables.
type procStack struct {
	Dir     string
	BaseURL string // the API
	Secret  string // the subscription's
	Mail    *mailcatch.Server
	PG      *testenv.Postgres
	Redis   *testenv.Redis
	Serve   *testenv.Process
	Worker  *testenv.Process

	started  time.Time // when serve and worker were last ready
	bin      string
	vars     map[string]string // TIDINGS_* every command gets
	apiToken string
	stats    *pgx.Conn // as loadRole, on the postgres database
	inspect  *asynq.Inspector
}

// startProcStack starts the servers, prepares the database the way an
// operator would (tidings migrate, subscription add, workflow install) and
// starts serve and worker with settings. On error nothing is left running.
func startProcStack(ctx context.Context, settings serviceSettings, say func(string, ...any)) (_ *procStack, err error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tidings-load-")
	if err != nil {
		return nil, err
	}
	s := &procStack{Dir: dir, bin: bin}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// Postgres runs as the postgres user when we are root: let it in.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	say("starting PostgreSQL (pg_stat_statements) …")
	if s.PG, err = testenv.StartPostgresWith(ctx, dir, testenv.PostgresOptions{StatStatements: true}); err != nil {
		return nil, err
	}
	if err := s.PG.CreateDatabase(ctx, loadDatabase, ""); err != nil {
		return nil, err
	}
	if err := s.PG.CreateDatabase(ctx, baselineDatabase, ""); err != nil {
		return nil, err
	}
	if err := s.prepareStats(ctx); err != nil {
		return nil, err
	}
	say("starting Redis …")
	if s.Redis, err = testenv.StartRedis(ctx, dir, testenv.RedisOptions{AppendOnly: true}); err != nil {
		return nil, err
	}
	s.inspect = asynq.NewInspector(worker.RedisOpt(s.Redis.Addr, "", 0))
	say("starting the mail catcher (STARTTLS, counting only) …")
	if s.Mail, err = mailcatch.Start(mailcatch.Options{STARTTLS: true, CountOnly: true}); err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "relay-ca.pem")
	if err := os.WriteFile(caFile, s.Mail.CertPEM(), 0o600); err != nil {
		return nil, err
	}
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s.BaseURL = "http://" + listen
	workerAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	mailHost, mailPort, _ := net.SplitHostPort(s.Mail.Addr())
	s.vars = map[string]string{
		"TIDINGS_DATABASE_URL":    s.PG.URL(loadDatabase),
		"TIDINGS_REDIS_ADDR":      s.Redis.Addr,
		"TIDINGS_SEAL_KEYS":       "load1:" + newKey(),
		"TIDINGS_BLIND_INDEX_KEY": newKey(),
		"TIDINGS_PUBLIC_BASE_URL": s.BaseURL,
		"TIDINGS_LISTEN_ADDR":     listen,
		"TIDINGS_WORKER_ADDR":     workerAddr,
		"TIDINGS_SMTP_HOST":       mailHost,
		"TIDINGS_SMTP_PORT":       mailPort,
		"TIDINGS_SMTP_FROM":       "Tidings load <notices@tidings.invalid>",
		"TIDINGS_SMTP_CA_FILE":    caFile,
		// The worker chains the audit log as in production.
		"TIDINGS_AUDIT_KEYS":           "load1:" + newKey(),
		"TIDINGS_AUDIT_SIGNING_KEY":    "loadsign:" + newKey(),
		"TIDINGS_AUDIT_CHECKPOINT_DIR": filepath.Join(s.Dir, "audit-checkpoints"),
	}

	say("tidings migrate up; subscription add; workflow install --builtins; keys create …")
	s.Secret = seal.NewToken()
	tokenFile := filepath.Join(dir, "contacts-api-key")
	for _, args := range [][]string{
		{"migrate", "up"},
		{"subscription", "add", "--id", loadSubscription, "--tenant", loadTenant, "--topic", eobTopic, "--secret-env", "LOAD_SUBSCRIPTION_SECRET"},
		{"workflow", "install", "--tenant", loadTenant, "--builtins"},
		{"keys", "create", "--tenant", loadTenant, "--role", "contacts", "--name", "load", "--token-file", tokenFile},
	} {
		if err := s.run(ctx, args, "LOAD_SUBSCRIPTION_SECRET="+s.Secret); err != nil {
			return nil, err
		}
	}
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, err
	}
	s.apiToken = strings.TrimSpace(string(token))
	if err := s.startServices(ctx, settings, say); err != nil {
		return nil, err
	}
	return s, nil
}

// env is this process's environment without any TIDINGS_* variable of its
// own, plus the stack's and those settings changes: a command sees exactly
// the settings we chose.
func (s *procStack) env(settings serviceSettings) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TIDINGS_") {
			env = append(env, kv)
		}
	}
	for k, v := range s.vars {
		env = append(env, k+"="+v)
	}
	if settings.RatePerSecond > 0 {
		env = append(env, "TIDINGS_RATE_PER_SECOND="+strconv.FormatFloat(settings.RatePerSecond, 'f', -1, 64),
			"TIDINGS_RATE_BURST="+strconv.Itoa(max(1, int(2*settings.RatePerSecond))))
	}
	if settings.Concurrency > 0 {
		env = append(env, "TIDINGS_WORKER_CONCURRENCY="+strconv.Itoa(settings.Concurrency))
	}
	if settings.WorkerNice != "" {
		env = append(env, "TIDINGS_WORKER_NICE="+settings.WorkerNice)
	}
	if settings.CPUProfile != "" {
		env = append(env, "TIDINGS_CPU_PROFILE="+settings.CPUProfile)
	}
	return env
}

// prepareStats creates the load command's own database user and the
// pg_stat_statements view, and connects as that user.
func (s *procStack) prepareStats(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.PG.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, sql := range []string{
		`CREATE ROLE ` + loadRole + ` LOGIN SUPERUSER`,
		`CREATE EXTENSION pg_stat_statements`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	s.stats, err = pgx.Connect(ctx, s.roleURL("postgres"))
	return err
}

// roleURL is database db's URL for the load command's own user.
func (s *procStack) roleURL(db string) string {
	return strings.Replace(s.PG.URL(db), "://"+s.PG.User+"@", "://"+loadRole+"@", 1)
}

// run runs a short tidings command (setup, as an operator would) with the
// services' environment and extra variables.
func (s *procStack) run(ctx context.Context, args []string, extra ...string) error {
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Env = append(s.env(serviceSettings{}), extra...)
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("tidings %s: %w\n%s", strings.Join(args[:min(2, len(args))], " "), err, tailOf(out.String(), 20))
	}
	return nil
}

// tailOf returns the last n lines of text.
func tailOf(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// startServices starts serve and worker and waits until serve answers
// /readyz and the worker's Asynq server has registered in Redis.
func (s *procStack) startServices(ctx context.Context, settings serviceSettings, say func(string, ...any)) (err error) {
	say("starting tidings serve and tidings worker (separate processes) …")
	env := s.env(settings)
	if s.Serve, err = testenv.StartProcess(s.bin, []string{"serve"}, env, s.Dir, filepath.Join(s.Dir, "serve.log")); err != nil {
		return err
	}
	if s.Worker, err = testenv.StartProcess(s.bin, []string{"worker"}, env, s.Dir, filepath.Join(s.Dir, "worker.log")); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		if err := s.exited(); err != nil {
			return err
		}
		if s.ready(ctx) {
			s.started = time.Now()
			return nil
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("serve and worker not ready after a minute: %w%s", err, s.logTails())
		}
	}
}

func (s *procStack) ready(ctx context.Context) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.BaseURL+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	servers, err := s.inspect.Servers()
	return err == nil && len(servers) > 0
}

// exited reports a service that has stopped on its own.
func (s *procStack) exited() error {
	for _, p := range []struct {
		name string
		proc *testenv.Process
	}{{"serve", s.Serve}, {"worker", s.Worker}} {
		if p.proc == nil {
			continue
		}
		if st := p.proc.State(); st != nil {
			return fmt.Errorf("tidings %s exited (%s)%s", p.name, st, s.logTails())
		}
	}
	return nil
}

// died is closed when serve or worker exits.
func (s *procStack) died() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		select {
		case <-s.Serve.Done():
		case <-s.Worker.Done():
		}
		close(ch)
	}()
	return ch
}

// logTails is the end of both services' logs, for an error.
func (s *procStack) logTails() string {
	var b strings.Builder
	for _, name := range []string{"serve", "worker"} {
		raw, err := os.ReadFile(filepath.Join(s.Dir, name+".log"))
		if err == nil && len(raw) > 0 {
			fmt.Fprintf(&b, "\n%s log ends with:\n%s", name, tailOf(string(raw), 10))
		}
	}
	return b.String()
}

// stopServices stops worker and serve (SIGTERM, as an orchestrator would)
// and reports one that did not exit cleanly.
func (s *procStack) stopServices() error {
	var errs []error
	for _, p := range []struct {
		name string
		proc **testenv.Process
	}{{"worker", &s.Worker}, {"serve", &s.Serve}} {
		if *p.proc == nil {
			continue
		}
		if st := (*p.proc).Stop(stopGrace); st == nil || !st.Success() {
			errs = append(errs, fmt.Errorf("tidings %s did not exit cleanly (%v)", p.name, st))
		}
		*p.proc = nil
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w%s", errors.Join(errs...), s.logTails())
	}
	return nil
}

// putContacts registers the load patients' email address through the API,
// as a payer's system would, from clients connections.
func (s *procStack) putContacts(ctx context.Context, patientRefs []string, clients int) error {
	body := []byte(`{"email":"` + loadEmail + `"}`)
	res := newPoster(clients, http.MethodPut, "application/json", s.apiToken,
		func(i int) string { return s.BaseURL + "/v1/contacts/" + patientRefs[i] },
		func(int) []byte { return body }).closedLoop(ctx, clients, 0, len(patientRefs))
	if err := ctx.Err(); err != nil {
		return err
	}
	if res.accepted() < len(patientRefs) {
		return fmt.Errorf("PUT /v1/contacts: %d of %d not accepted (first: %s)", len(patientRefs)-res.accepted(), len(patientRefs), res.firstErr)
	}
	return nil
}

// quiet waits until the worker's queues hold nothing to run now (pending,
// active or waiting for a retry); scheduled wake-ups due later do not count.
// It reads Redis only, so it adds nothing to what Postgres counts.
func (s *procStack) quiet(ctx context.Context, limit time.Duration) (left int, err error) {
	deadline := time.Now().Add(limit)
	for {
		left = 0
		queues, err := s.inspect.Queues() // those that ever held a task
		if err != nil {
			return 0, err
		}
		for _, q := range queues {
			info, err := s.inspect.GetQueueInfo(q)
			if err != nil {
				return 0, err
			}
			left += info.Pending + info.Active + info.Retry
		}
		if left == 0 || time.Now().After(deadline) {
			return left, nil
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return left, err
		}
	}
}

// Close stops everything and removes the folder; safe on a half-started
// stack and more than once.
func (s *procStack) Close() {
	_ = s.stopServices()
	if s.inspect != nil {
		s.inspect.Close()
		s.inspect = nil
	}
	if s.stats != nil {
		s.stats.Close(context.Background())
		s.stats = nil
	}
	if s.Mail != nil {
		s.Mail.Close()
	}
	if s.Redis != nil {
		s.Redis.Close()
	}
	if s.PG != nil {
		s.PG.Stop()
	}
	if s.Dir != "" {
		os.RemoveAll(s.Dir)
	}
}

// freeAddr is a loopback address nobody listens on.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}
