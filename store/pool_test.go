package store

import (
	"context"
	"testing"

	"github.com/tidings-health/tidings/testenv"
)

// Warm opens the connections Postgres backends serve, leaves them idle in
// the pool, opens again those the pool closed, and takes nothing while the
// pool is in use.
func TestWarm(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	sqlDB, err := s.db.DB()
	if err != nil {
		t.Fatal(err)
	}
	backends := func() int {
		t.Helper()
		var n int
		if err := s.db.Raw(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	if open, err := s.Warm(ctx, 6); err != nil || open < 6 {
		t.Fatalf("Warm(6): %d open, %v", open, err)
	}
	if st := sqlDB.Stats(); st.Idle < 6 || st.InUse != 0 {
		t.Errorf("after Warm: %+v", st)
	}
	// The query above takes one of the idle connections; the other
	// backends of the pool are still there.
	if n := backends(); n < 5 {
		t.Errorf("%d other backends for this database after Warm(6)", n)
	}
	// The pool closes idle connections (here all of them at once, as five
	// idle minutes would); Warm opens them again.
	sqlDB.SetMaxIdleConns(0)
	sqlDB.SetMaxIdleConns(20)
	if st := sqlDB.Stats(); st.OpenConnections != 0 {
		t.Fatalf("the pool kept %d connections", st.OpenConnections)
	}
	if open, err := s.Warm(ctx, 4); err != nil || open != 4 {
		t.Errorf("Warm(4) after the pool emptied: %d open, %v", open, err)
	}
	// Beside a connection in use (a listener's) it still warms n more.
	c, err := sqlDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if open, err := s.Warm(ctx, 6); err != nil || open != 7 {
		t.Errorf("Warm(6) beside a connection in use: %d open, want 7; %v", open, err)
	}
	// When the pool could not give n more, Warm takes none.
	before := sqlDB.Stats().OpenConnections
	if open, err := s.Warm(ctx, 20); err != nil || open != before {
		t.Errorf("Warm(20) with 1 of 20 in use: %d open (before %d), %v", open, before, err)
	}
	c.Close()
	// A context that has ended opens nothing and says so.
	sqlDB.SetMaxIdleConns(0)
	sqlDB.SetMaxIdleConns(20)
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Warm(done, 3); err == nil {
		t.Error("Warm with an ended context reported no error")
	}
}

// Connections say which command holds them unless the URL says otherwise.
func TestWithApplicationName(t *testing.T) {
	for _, tc := range []struct{ url, name, want string }{
		{"postgres://u@h:5432/db", "tidings-serve", "postgres://u@h:5432/db?application_name=tidings-serve"},
		{"postgresql://u@h/db?sslmode=disable", "tidings-worker", "postgresql://u@h/db?application_name=tidings-worker&sslmode=disable"},
		{"postgres://u@h/db?application_name=mine", "tidings-serve", "postgres://u@h/db?application_name=mine"},
		{"postgres://u@h/db", "", "postgres://u@h/db"},
		{"host=h user=u", "tidings-serve", "host=h user=u"},
	} {
		if got := withApplicationName(tc.url, tc.name); got != tc.want {
			t.Errorf("withApplicationName(%q, %q) = %q, want %q", tc.url, tc.name, got, tc.want)
		}
	}
	// Open names its connections.
	dbURL := testenv.NewDB(t)
	s, err := Open(context.Background(), dbURL, nil, Options{ApplicationName: "tidings-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var name string
	if err := s.db.Raw(`SELECT current_setting('application_name')`).Scan(&name).Error; err != nil || name != "tidings-test" {
		t.Errorf("application_name %q, %v", name, err)
	}
}
