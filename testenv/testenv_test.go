package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
)

// helperEnv switches the test binary into a helper that starts servers and
// then waits to be killed (see TestServersDieWithTestBinary).
const helperEnv = "TESTENV_ORPHAN_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(orphanHelper(dir))
	}
	Main(m, migrateProbe)
}

// migrateProbe stands in for the project's migrations: one table with one
// row. It also leaves a connection open on purpose, as a leaky migration
// would, to show that Main still leaves the template clonable.
func migrateProbe(ctx context.Context, dbURL string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, `CREATE TABLE probe (note text NOT NULL)`); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `INSERT INTO probe (note) VALUES ('from-migration')`); err != nil {
		return err
	}
	_, err = pgx.Connect(ctx, dbURL) // leaked
	return err
}

func connect(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func probeNotes(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(), `SELECT note FROM probe ORDER BY note`)
	if err != nil {
		t.Fatalf("query probe: %v", err)
	}
	notes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read probe: %v", err)
	}
	return notes
}

func TestPostgresAcceptsQueries(t *testing.T) {
	env := Current()
	if env == nil {
		t.Fatal("Current() is nil under Main")
	}
	conn := connect(t, env.PG.URL("postgres"))
	var user, addr string
	var port int
	err := conn.QueryRow(t.Context(),
		`SELECT current_user, host(inet_server_addr()), inet_server_port()`).Scan(&user, &addr, &port)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	if user != "tidings" || addr != "127.0.0.1" || port != env.PG.Port {
		t.Errorf("connected as %s to %s:%d, want tidings to 127.0.0.1:%d", user, addr, port, env.PG.Port)
	}
	want := map[string]string{
		"listen_addresses":   "127.0.0.1",
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"max_connections":    "200",
		"server_encoding":    "UTF8",
	}
	for name, value := range want {
		var got string
		if err := conn.QueryRow(t.Context(), `SELECT current_setting($1)`, name).Scan(&got); err != nil {
			t.Fatalf("setting %s: %v", name, err)
		}
		if got != value {
			t.Errorf("%s = %q, want %q", name, got, value)
		}
	}
	if u := env.PG.URL("some_db"); u != fmt.Sprintf("postgres://tidings@127.0.0.1:%d/some_db?sslmode=disable", env.PG.Port) {
		t.Errorf("URL = %s", u)
	}
	if _, err := os.Stat(filepath.Join(env.PG.Dir, ".s.PGSQL."+strconv.Itoa(env.PG.Port))); err != nil {
		t.Errorf("unix socket not in Dir: %v", err)
	}
}

func TestCreateDatabase(t *testing.T) {
	pg := Current().PG
	ctx := t.Context()

	if err := pg.CreateDatabase(ctx, "copy_of_template", TemplateName); err != nil {
		t.Fatalf("CreateDatabase from template: %v", err)
	}
	t.Cleanup(func() { _ = pg.DropDatabase(context.Background(), "copy_of_template") })
	if got := probeNotes(t, connect(t, pg.URL("copy_of_template"))); len(got) != 1 || got[0] != "from-migration" {
		t.Errorf("copy of template has probe rows %q, want [from-migration]", got)
	}

	if err := pg.CreateDatabase(ctx, "plain", ""); err != nil {
		t.Fatalf("CreateDatabase without template: %v", err)
	}
	t.Cleanup(func() { _ = pg.DropDatabase(context.Background(), "plain") })
	_, err := connect(t, pg.URL("plain")).Exec(ctx, `SELECT 1 FROM probe`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
		t.Errorf("plain database: query on probe gave %v, want undefined_table", err)
	}

	if err := pg.CreateDatabase(ctx, "plain", ""); err == nil || !strings.Contains(err.Error(), `"plain"`) {
		t.Errorf("second CreateDatabase of the same name gave %v, want an error naming it", err)
	}
}

func TestTemplateRefusesConnections(t *testing.T) {
	// Anyone connected to the template would make every clone fail.
	conn, err := pgx.Connect(t.Context(), Current().PG.URL(TemplateName))
	if err == nil {
		_ = conn.Close(context.Background())
		t.Fatal("connected to the template database; it must refuse connections")
	}
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	var n int
	err := connect(t, Current().PG.URL("postgres")).QueryRow(t.Context(),
		`SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n)
	if err != nil {
		t.Fatalf("look up database: %v", err)
	}
	return n == 1
}

func dbNameOf(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse %s: %v", dbURL, err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func TestNewDBIsolated(t *testing.T) {
	a, b := NewDB(t), NewDB(t)
	if a == b {
		t.Fatalf("NewDB twice gave the same database %s", a)
	}
	connA, connB := connect(t, a), connect(t, b)
	if _, err := connA.Exec(t.Context(), `INSERT INTO probe (note) VALUES ('only-in-a')`); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if got := probeNotes(t, connA); len(got) != 2 {
		t.Errorf("database a has %q, want the migrated row and only-in-a", got)
	}
	if got := probeNotes(t, connB); len(got) != 1 || got[0] != "from-migration" {
		t.Errorf("database b has %q, want only the migrated row", got)
	}
}

func TestNewDBDroppedAfterTest(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		name = dbNameOf(t, NewDB(t))
		connect(t, NewDB(t)) // still connected at cleanup: the drop must force it out
		if !databaseExists(t, name) {
			t.Fatalf("database %s missing during the test", name)
		}
	})
	if databaseExists(t, name) {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

func TestNewDBParallel(t *testing.T) {
	for i := range 8 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			conn := connect(t, NewDB(t))
			if got := probeNotes(t, conn); len(got) != 1 {
				t.Errorf("fresh clone has %q", got)
			}
		})
	}
}

func TestNewRedisDB(t *testing.T) {
	ctx := t.Context()
	var innerDB int
	var innerAddr string
	t.Run("inner", func(t *testing.T) {
		addr1, db1 := NewRedisDB(t)
		addr2, db2 := NewRedisDB(t)
		if addr1 != Current().Redis.Addr || addr2 != addr1 {
			t.Errorf("addresses %s and %s, want %s", addr1, addr2, Current().Redis.Addr)
		}
		if db1 == db2 || db1 < 0 || db1 > 15 || db2 < 0 || db2 > 15 {
			t.Fatalf("got databases %d and %d, want two distinct in 0..15", db1, db2)
		}
		c1 := redis.NewClient(&redis.Options{Addr: addr1, DB: db1})
		c2 := redis.NewClient(&redis.Options{Addr: addr2, DB: db2})
		defer c1.Close()
		defer c2.Close()
		if err := c1.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatalf("set: %v", err)
		}
		if err := c2.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
			t.Errorf("key set in db %d visible in db %d (err %v)", db1, db2, err)
		}
		innerAddr, innerDB = addr1, db1
	})
	c := redis.NewClient(&redis.Options{Addr: innerAddr, DB: innerDB})
	defer c.Close()
	if n, err := c.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Errorf("db %d after its test: %d keys (err %v), want flushed", innerDB, n, err)
	}
}

func TestNewRedisDBMoreTestsThanDatabases(t *testing.T) {
	// 40 parallel tests share 16 databases; none may see another's keys.
	var mu sync.Mutex
	holders := map[int]string{}
	for i := range 40 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			addr, db := NewRedisDB(t)
			mu.Lock()
			if other, busy := holders[db]; busy {
				t.Errorf("db %d lent to %s and %s at once", db, other, t.Name())
			}
			holders[db] = t.Name()
			mu.Unlock()
			c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
			defer c.Close()
			if n, err := c.DBSize(t.Context()).Result(); err != nil || n != 0 {
				t.Errorf("db %d lent with %d keys (err %v)", db, n, err)
			}
			if err := c.Set(t.Context(), "owner", t.Name(), 0).Err(); err != nil {
				t.Fatalf("set: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			delete(holders, db)
			mu.Unlock()
		})
	}
}

func TestRedisStopRestartSamePort(t *testing.T) {
	ctx := t.Context()
	r, err := StartRedis(ctx, "", RedisOptions{})
	if err != nil {
		t.Fatalf("StartRedis: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	addr, oldPID := r.Addr, r.pid()

	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if alive(oldPID) {
		t.Errorf("redis pid %d still running after Stop", oldPID)
	}
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered while stopped")
	}
	if err := r.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}

	if err := r.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if r.Addr != addr {
		t.Errorf("restarted on %s, want %s", r.Addr, addr)
	}
	// The same client reconnects; without append-only nothing survived.
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET after restart: %v, want no key", err)
	}
	for i := range 3 {
		if err := c.Set(ctx, "k", i, 0).Err(); err != nil {
			t.Fatalf("set %d after restart: %v", i, err)
		}
	}
	// Restart while running also works.
	if err := r.Restart(ctx); err != nil {
		t.Fatalf("Restart while running: %v", err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Errorf("PING after second restart: %v", err)
	}
}

func TestRedisAppendOnlyKeepsData(t *testing.T) {
	ctx := t.Context()
	r, err := StartRedis(ctx, "", RedisOptions{AppendOnly: true})
	if err != nil {
		t.Fatalf("StartRedis: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	defer c.Close()
	if err := c.Set(ctx, "k", "kept", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := r.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "kept" {
		t.Errorf("GET after restart = %q, %v; want kept", got, err)
	}
}

func TestStopLeavesNothingBehind(t *testing.T) {
	ctx := t.Context()
	pg, err := StartPostgres(ctx, "")
	if err != nil {
		t.Fatalf("StartPostgres: %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	r, err := StartRedis(ctx, "", RedisOptions{})
	if err != nil {
		t.Fatalf("StartRedis: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })

	// A client stays connected through Stop, as a leaky test's pool would.
	conn := connect(t, pg.URL("postgres"))
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		t.Fatalf("query: %v", err)
	}
	pgPIDs := family(pg.pid())
	if !contains(pgPIDs, pg.pid()) || !contains(pgPIDs, backend) {
		t.Fatalf("processes %v lack the postmaster %d or the backend %d", pgPIDs, pg.pid(), backend)
	}
	redisPID := r.pid()

	if err := pg.Stop(); err != nil {
		t.Fatalf("Postgres.Stop: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Redis.Close: %v", err)
	}
	for _, pid := range append(pgPIDs, redisPID) {
		if alive(pid) {
			t.Errorf("pid %d still running after Stop", pid)
		}
	}
	for _, dir := range []string{pg.Dir, r.Dir} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("folder %s still there (stat: %v)", dir, err)
		}
	}
	if err := pg.Stop(); err != nil {
		t.Errorf("second Postgres.Stop: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Redis.Close: %v", err)
	}
	if err := r.Restart(ctx); err == nil {
		t.Error("Restart after Close succeeded")
	}
}

// TestServersDieWithTestBinary kills a test binary that started servers, the
// way a -timeout panic or a crash would, and checks that they die with it.
func TestServersDieWithTestBinary(t *testing.T) {
	dir, err := os.MkdirTemp("", "testenv-orphan-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("helper said nothing: %v", err)
	}
	var pgPID, redisPID int
	if _, err := fmt.Sscanf(line, "pg=%d redis=%d", &pgPID, &redisPID); err != nil {
		t.Fatalf("helper said %q: %v", line, err)
	}
	pids := append(family(pgPID), redisPID)
	if len(pids) < 3 {
		t.Fatalf("expected a postmaster with workers and a redis, found %v", pids)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("pid %d outlived the killed test binary", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	removeStale(dir)
	if left, _ := filepath.Glob(filepath.Join(dir, "tidings-*")); len(left) != 0 {
		t.Errorf("folders of the dead helper not removed: %v", left)
	}
}

// signalHelperEnv makes TestSignalHelper run: the test binary then stands
// for a package's tests under Main, interrupted by a signal.
const signalHelperEnv = "TESTENV_SIGNAL_HELPER"

func TestSignalHelper(t *testing.T) {
	if os.Getenv(signalHelperEnv) == "" {
		t.Skip("runs only as the child of TestMainCleansUpOnSignal")
	}
	env := Current()
	fmt.Printf("pg=%d redis=%d dir=%s\n", env.PG.pid(), env.Redis.pid(), env.dir)
	select {}
}

// TestMainCleansUpOnSignal interrupts a test binary running under Main, as
// Ctrl-C or a CI runner's SIGTERM would.
func TestMainCleansUpOnSignal(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestSignalHelper$")
	cmd.Env = append(os.Environ(), signalHelperEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var pgPID, redisPID int
	var dir string
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if _, err := fmt.Sscanf(lines.Text(), "pg=%d redis=%d dir=%s", &pgPID, &redisPID, &dir); err == nil {
			break
		}
	}
	if dir == "" {
		t.Fatalf("helper printed no pids (%v)", lines.Err())
	}
	pids := append(family(pgPID), redisPID)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Errorf("helper ended with %v, want exit code %d", err, 128+int(syscall.SIGTERM))
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d still running after the signal", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("folder %s still there after the signal (stat: %v)", dir, err)
		_ = os.RemoveAll(dir)
	}
}

// orphanHelper starts both servers under dir, prints their pids and waits to
// be killed.
func orphanHelper(dir string) int {
	ctx := context.Background()
	pg, err := StartPostgres(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r, err := StartRedis(ctx, dir, RedisOptions{})
	if err != nil {
		_ = pg.Stop()
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("pg=%d redis=%d\n", pg.pid(), r.pid())
	select {}
}

// alive reports whether pid runs (a zombie waiting to be reaped does not).
func alive(pid int) bool {
	st, ok := readProcStat(pid)
	return ok && st.state != "Z" && st.state != "X"
}

// family lists pid and its live descendants: a postmaster and its backends,
// which each lead a process group of their own.
func family(pid int) []int {
	if !alive(pid) {
		return nil
	}
	pids := []int{pid}
	for _, kid := range childrenOf(pid) {
		pids = append(pids, family(kid)...)
	}
	return pids
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// With StatStatements the server counts every statement, nested ones too.
func TestPostgresStatStatements(t *testing.T) {
	ctx := t.Context()
	pg, err := StartPostgresWith(ctx, "", PostgresOptions{StatStatements: true})
	if err != nil {
		t.Fatalf("StartPostgresWith: %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	if pg.PID() == 0 || !alive(pg.PID()) {
		t.Fatalf("PID %d", pg.PID())
	}
	conn := connect(t, pg.URL("postgres"))
	for _, sql := range []string{
		`CREATE EXTENSION pg_stat_statements`,
		`CREATE FUNCTION probe_nested() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT 41 + 1); END $$`,
		`SELECT pg_stat_statements_reset()`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for range 3 {
		if _, err := conn.Exec(ctx, `SELECT probe_nested()`); err != nil {
			t.Fatal(err)
		}
	}
	var outer, nested int64
	err = conn.QueryRow(ctx, `SELECT
		coalesce(sum(calls) FILTER (WHERE query LIKE 'SELECT probe_nested()%'), 0),
		coalesce(sum(calls) FILTER (WHERE query LIKE '%41 + 1%' OR query LIKE '%$1 + $2%'), 0)
		FROM pg_stat_statements`).Scan(&outer, &nested)
	if err != nil {
		t.Fatal(err)
	}
	if outer != 3 || nested != 3 {
		t.Errorf("calls: outer %d, nested %d; want 3 and 3 (track=all)", outer, nested)
	}
	var track string
	if err := conn.QueryRow(ctx, `SHOW pg_stat_statements.track`).Scan(&track); err != nil || track != "all" {
		t.Errorf("pg_stat_statements.track = %q, %v", track, err)
	}
}

// An immediate restart of a durable cluster keeps every acknowledged commit
// and answers again on the same port.
func TestPostgresRestartImmediateKeepsCommits(t *testing.T) {
	ctx := context.Background()
	pg, err := StartPostgresWith(ctx, "", PostgresOptions{Durable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Stop()
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000)`); err != nil {
		t.Fatal(err)
	}
	port := pg.Port
	if err := pg.RestartImmediate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT 1`); err == nil {
		t.Error("the old connection survived an immediate restart")
	}
	conn.Close(ctx)
	if pg.Port != port {
		t.Errorf("port %d, want %d", pg.Port, port)
	}
	conn, err = pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1000 {
		t.Fatalf("rows after restart: %d, %v", n, err)
	}
	if !strings.Contains(logTail(pg.Log, 200), "database system was interrupted") && !strings.Contains(logTail(pg.Log, 200), "not properly shut down") {
		t.Errorf("no crash recovery in the log:\n%s", logTail(pg.Log, 30))
	}
}
