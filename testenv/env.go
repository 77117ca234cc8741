package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

const (
	testPrefix = "tidings-test-"
	// TemplateName is the database Main migrates and NewDB clones.
	TemplateName = "tidings_template"
	// redisDBs is how many logical databases the server has, and so how many
	// tests can hold one from NewRedisDB at once.
	redisDBs = 16
	// setupTimeout bounds starting the servers and migrating the template.
	setupTimeout = 2 * time.Minute
)

// Env is what Main started for the test binary. Its servers are shared by
// every test of the binary: a test that stops or restarts Redis starts its
// own with StartRedis instead.
type Env struct {
	PG         *Postgres
	Redis      *Redis
	TemplateDB string

	dir        string
	redisSlots chan int // free logical Redis databases
	dbSeq      atomic.Uint64
	stopOnce   sync.Once
}

var current atomic.Pointer[Env]

// Current is the Env that Main started, or nil outside a Main run.
func Current() *Env { return current.Load() }

// Main runs a package's tests against servers of their own. Call it from
// TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m, migrations.Up) }
//
// It starts PostgreSQL and Redis in a temporary folder, creates TemplateName
// and runs migrate (nil for none) on it once, runs the tests, stops both
// servers, removes the folder and exits with the tests' code. migrate must
// close every connection it opened: a database cannot be cloned while
// someone is connected to it. On SIGINT, SIGTERM or SIGHUP it cleans up
// before exiting; if the binary dies harder (panic, -timeout, SIGKILL), the
// kernel kills the servers with it and the next Main removes the folder.
func Main(m *testing.M, migrate func(ctx context.Context, dbURL string) error) {
	os.Exit(runMain(m, migrate))
}

func runMain(m *testing.M, migrate func(ctx context.Context, dbURL string) error) int {
	removeStale("")
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	env, err := setup(ctx, migrate)
	cancel()
	if err != nil {
		// Main owns the process exit, so it is the one to say why.
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		return 1
	}
	defer env.stop()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		sig := <-sigs
		env.stop()
		fmt.Fprintf(os.Stderr, "testenv: %v: stopped the test servers\n", sig)
		code := 1
		if s, ok := sig.(syscall.Signal); ok {
			code = 128 + int(s)
		}
		os.Exit(code)
	}()

	current.Store(env)
	defer current.Store(nil)
	return m.Run()
}

// setup starts both servers and prepares the template database.
func setup(ctx context.Context, migrate func(ctx context.Context, dbURL string) error) (_ *Env, err error) {
	dir, err := makeDir("", testPrefix)
	if err != nil {
		return nil, err
	}
	// As root, the postgres user must be able to enter the folder.
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("testenv: folder: %w", err)
	}
	env := &Env{dir: dir, TemplateDB: TemplateName, redisSlots: make(chan int, redisDBs)}
	for i := range redisDBs {
		env.redisSlots <- i
	}
	defer func() {
		if err != nil {
			env.stop()
		}
	}()
	if env.PG, err = StartPostgres(ctx, dir); err != nil {
		return nil, err
	}
	if env.Redis, err = StartRedis(ctx, dir, RedisOptions{}); err != nil {
		return nil, err
	}
	if err := env.PG.CreateDatabase(ctx, TemplateName, ""); err != nil {
		return nil, err
	}
	if migrate != nil {
		if err := migrate(ctx, env.PG.URL(TemplateName)); err != nil {
			return nil, fmt.Errorf("testenv: migrate %s: %w", TemplateName, err)
		}
	}
	// Lock the template against connections, then end any that migrate left
	// open (an unclosed pool, say); cloning waits for those to go away.
	lit := quoteLiteral(TemplateName)
	err = env.PG.admin(ctx,
		"ALTER DATABASE "+pgx.Identifier{TemplateName}.Sanitize()+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "+lit+" AND pid <> pg_backend_pid()",
	)
	if err != nil {
		return nil, fmt.Errorf("testenv: seal %s: %w", TemplateName, err)
	}
	return env, nil
}

// stop ends both servers and removes the folder; safe from any goroutine,
// and only the first call does anything.
func (e *Env) stop() {
	e.stopOnce.Do(func() {
		if e.PG != nil {
			_ = e.PG.Stop()
		}
		if e.Redis != nil {
			_ = e.Redis.Close()
		}
		_ = os.RemoveAll(e.dir)
	})
}

// NewDB creates a database for tb, cloned from the migrated template, drops
// it when tb ends, and returns its URL.
func NewDB(tb testing.TB) string {
	tb.Helper()
	env := mustCurrent(tb, "NewDB")
	name := dbName(tb.Name(), env.dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := env.PG.CreateDatabase(ctx, name, env.TemplateDB); err != nil {
		tb.Fatalf("testenv.NewDB: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := env.PG.DropDatabase(ctx, name); err != nil {
			tb.Errorf("testenv.NewDB cleanup: %v", err)
		}
	})
	return env.PG.URL(name)
}

// AppRoleURL makes a LOGIN role granted tidings_app (the role serve and
// the worker run as, see migration 7) for tb, dropped when tb ends, and
// returns dbURL (an owner's URL) as that role: for tests of what the
// service may and may not do. Close its connections before tb ends.
func AppRoleURL(tb testing.TB, dbURL string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		tb.Fatalf("testenv.AppRoleURL: %v", err)
	}
	defer owner.Close(context.Background())
	role := fmt.Sprintf("tidings_test_%d", time.Now().UnixNano())
	if _, err := owner.Exec(ctx, `CREATE ROLE `+role+` LOGIN IN ROLE tidings_app`); err != nil {
		tb.Fatalf("testenv.AppRoleURL: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		owner, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			tb.Errorf("testenv.AppRoleURL cleanup: %v", err)
			return
		}
		defer owner.Close(context.Background())
		if _, err := owner.Exec(ctx, `DROP ROLE `+role); err != nil {
			tb.Errorf("testenv.AppRoleURL cleanup: %v", err)
		}
	})
	u, err := url.Parse(dbURL)
	if err != nil {
		tb.Fatalf("testenv.AppRoleURL: %v", err)
	}
	u.User = url.User(role)
	return u.String()
}

// NewRedisDB lends tb a logical Redis database that no other test of this
// binary holds, empty, and empties it again when tb ends. With all 16 lent,
// it waits for one to come back.
func NewRedisDB(tb testing.TB) (addr string, db int) {
	tb.Helper()
	env := mustCurrent(tb, "NewRedisDB")
	db = <-env.redisSlots
	if err := flushDB(env.Redis.Addr, db); err != nil {
		env.redisSlots <- db
		tb.Fatalf("testenv.NewRedisDB: %v", err)
	}
	tb.Cleanup(func() {
		// A failed flush here is harmless: the next borrower flushes first.
		if err := flushDB(env.Redis.Addr, db); err != nil {
			tb.Logf("testenv.NewRedisDB cleanup: %v", err)
		}
		env.redisSlots <- db
	})
	return env.Redis.Addr, db
}

func flushDB(addr string, db int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	defer func() { _ = c.Close() }()
	if err := c.FlushDB(ctx).Err(); err != nil {
		return fmt.Errorf("flush redis db %d: %w", db, err)
	}
	return nil
}

func mustCurrent(tb testing.TB, what string) *Env {
	tb.Helper()
	env := Current()
	if env == nil {
		tb.Fatalf("testenv.%s needs testenv.Main in the package's TestMain", what)
	}
	return env
}

// maxIdent is PostgreSQL's limit on identifier length, in bytes.
const maxIdent = 63

// dbName makes a database name from a test name: lower-case letters, digits
// and underscores, ending in seq so that names are unique in this process.
func dbName(testName string, seq uint64) string {
	suffix := "_" + strconv.FormatUint(seq, 10)
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case !strings.HasSuffix(b.String(), "_"):
			b.WriteByte('_')
		}
	}
	name := strings.TrimSuffix(b.String(), "_")
	if len(name) > maxIdent-len(suffix) {
		name = name[:maxIdent-len(suffix)]
	}
	return name + suffix
}

func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }
