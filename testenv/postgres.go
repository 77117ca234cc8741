package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	pgPrefix = "tidings-pg-"
	// pgUser is the superuser initdb creates; trust auth, no password.
	pgUser = "tidings"
	// startTimeout bounds waiting for a server when ctx has no deadline.
	startTimeout = time.Minute
	// portTries is how often a start is retried when another process took
	// the free port between our probe and the server's bind.
	portTries = 3
)

// Postgres is a PostgreSQL cluster of our own, listening on 127.0.0.1:Port,
// whose data, socket and log live in Dir.
type Postgres struct {
	Host string
	Port int
	User string
	Dir  string // removed by Stop
	Log  string // server log file, inside Dir

	opts    PostgresOptions
	bins    pgBinaries
	cred    *syscall.Credential
	mu      sync.Mutex
	srv     *child
	stopped bool
}

// PostgresOptions tune a PostgreSQL cluster.
type PostgresOptions struct {
	// StatStatements preloads pg_stat_statements and makes it track every
	// statement, nested ones too (pg_stat_statements.track=all), so that a
	// measurement can count what a program ran. Each database that reads the
	// view still needs CREATE EXTENSION pg_stat_statements.
	StatStatements bool
	// Durable commits synchronously (synchronous_commit=on), so that a
	// commit the server acknowledged survives an immediate restart. The
	// default acknowledges commits before their WAL is written, which is
	// faster and fine for data that dies with the test.
	Durable bool
}

// StartPostgres creates a cluster with initdb in a new folder under dir ("" for
// os.TempDir()) and starts it on a free loopback port. It returns once the
// server accepts connections. The server is our child process: Stop ends it,
// and it also dies when this process does.
//
// As root, initdb and postgres run as the `postgres` system user, which must be
// able to enter dir.
func StartPostgres(ctx context.Context, dir string) (*Postgres, error) {
	return StartPostgresWith(ctx, dir, PostgresOptions{})
}

// StartPostgresWith is StartPostgres with options.
func StartPostgresWith(ctx context.Context, dir string, opts PostgresOptions) (*Postgres, error) {
	bins, err := findPostgres(os.Getenv("PATH"), pgLibGlob)
	if err != nil {
		return nil, err
	}
	cred, err := pgCredential()
	if err != nil {
		return nil, err
	}
	parent := dir
	if parent == "" {
		parent = os.TempDir()
	}
	if err := checkReachable(parent, cred); err != nil {
		return nil, err
	}
	base, err := makeDir(parent, pgPrefix)
	if err != nil {
		return nil, err
	}
	p := &Postgres{Host: "127.0.0.1", User: pgUser, Dir: base, Log: filepath.Join(base, "postgres.log"), opts: opts, bins: bins, cred: cred}
	if err := p.start(ctx, bins, cred); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}

func (p *Postgres) start(ctx context.Context, bins pgBinaries, cred *syscall.Credential) error {
	if cred != nil {
		if err := os.Chown(p.Dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("testenv: give the data folder to the postgres user: %w", err)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	dataDir := filepath.Join(p.Dir, "data")
	initdb := exec.CommandContext(ctx, bins.initdb,
		"-D", dataDir, "--auth=trust", "-U", pgUser, "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.Dir = p.Dir
	initdb.Env = childEnv()
	initdb.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	// On cancel, also end the bootstrap postgres that initdb runs.
	initdb.Cancel = func() error { return syscall.Kill(-initdb.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	initdb.Stdout, initdb.Stderr = &out, &out
	if err := initdb.Run(); err != nil {
		return fmt.Errorf("testenv: initdb: %w\n%s", err, tailOf(out.String(), 20))
	}

	for try := 1; ; try++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		err = p.run(ctx, port)
		if err == nil {
			return nil
		}
		if errors.Is(err, errExited) && addrInUse(logTail(p.Log, 20)) && try < portTries {
			continue
		}
		return err
	}
}

// run starts the postmaster on the cluster in Dir and port and waits until it
// accepts connections.
func (p *Postgres) run(ctx context.Context, port int) error {
	dataDir := filepath.Join(p.Dir, "data")
	srv, err := startChild(p.bins.postgres, pgConfigArgs(dataDir, p.Dir, port, p.opts), childEnv(), p.Dir, p.Log, p.cred, syscall.SIGQUIT)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.srv, p.Port = srv, port
	p.mu.Unlock()
	err = waitReady(ctx, srv, func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, p.URL("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
	if err == nil {
		return nil
	}
	srv.stop(5*time.Second, syscall.SIGQUIT)
	return fmt.Errorf("testenv: postgres on port %d: %w; server log %s ends with:\n%s", port, err, p.Log, logTail(p.Log, 20))
}

// RestartImmediate stops the server as `pg_ctl restart -m immediate` does
// (SIGQUIT: every backend ends at once, no checkpoint) and starts it again on
// the same port and data, which makes it run crash recovery. Clients lose
// their connections and must reconnect.
func (p *Postgres) RestartImmediate(ctx context.Context) error {
	p.mu.Lock()
	srv, stopped, port := p.srv, p.stopped, p.Port
	p.mu.Unlock()
	if stopped {
		return fmt.Errorf("testenv: restart postgres: %w", errClosed)
	}
	if srv != nil {
		srv.stop(10*time.Second, syscall.SIGQUIT, syscall.SIGKILL)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	return p.run(ctx, port)
}

// URL is the connection URL of database dbname on this server.
func (p *Postgres) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(p.User),
		Host:     net.JoinHostPort(p.Host, strconv.Itoa(p.Port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates database name, as a copy of template ("" for the
// server's default, template1). Nobody may be connected to template.
func (p *Postgres) CreateDatabase(ctx context.Context, name, template string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if err := p.admin(ctx, sql); err != nil {
		return fmt.Errorf("testenv: create database %q: %w", name, err)
	}
	return nil
}

// DropDatabase drops database name if it exists, disconnecting its clients.
func (p *Postgres) DropDatabase(ctx context.Context, name string) error {
	if err := p.admin(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("testenv: drop database %q: %w", name, err)
	}
	return nil
}

// admin runs statements, in order, on the "postgres" maintenance database.
func (p *Postgres) admin(ctx context.Context, sqls ...string) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	for _, sql := range sqls {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return err
		}
	}
	return nil
}

// Stop shuts the server down the way `pg_ctl stop -m fast` does (SIGINT:
// disconnect clients, checkpoint, exit), escalates to an immediate shutdown
// and then SIGKILL if it takes over 10s, and removes Dir. It returns once no
// server process is left. Calling it again does nothing.
func (p *Postgres) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return nil
	}
	p.stopped = true
	if p.srv != nil {
		p.srv.stop(10*time.Second, syscall.SIGINT, syscall.SIGQUIT)
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		return fmt.Errorf("testenv: remove postgres folder: %w", err)
	}
	return nil
}

// PID is the postmaster's process id (0 before it started), for reading
// what the server costs from /proc.
func (p *Postgres) PID() int { return p.pid() }

// pid is the postmaster's process id (0 before it started).
func (p *Postgres) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv == nil {
		return 0
	}
	return p.srv.pid()
}

// pgConfigArgs are the postgres command-line settings for a throwaway
// cluster: loopback only, durability off (the data dies with the test),
// enough connections for parallel tests.
func pgConfigArgs(dataDir, socketDir string, port int, opts PostgresOptions) []string {
	settings := []string{
		"listen_addresses=127.0.0.1",
		"port=" + strconv.Itoa(port),
		"unix_socket_directories=" + socketDir,
		"fsync=off", // the data dies with the test; only an OS crash would need it
		"full_page_writes=off",
		"max_connections=200",
		"logging_collector=off",
	}
	if !opts.Durable {
		settings = append(settings, "synchronous_commit=off")
	}
	if opts.StatStatements {
		settings = append(settings, "shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all")
	}
	args := []string{"-D", dataDir}
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	return args
}
