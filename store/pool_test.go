package store

import (
	"context"
	"testing"

	"github.com/tidings-health/tidings/testenv"
)

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
