package console

import (
	"context"
	"testing"

	"github.com/tidings-health/tidings/migrations"
	"github.com/tidings-health/tidings/testenv"
)

// TestMain gives the package's tests their own PostgreSQL (migrated once
// into a template, cloned per test) and Redis.
func TestMain(m *testing.M) {
	testenv.Main(m, func(ctx context.Context, url string) error { return migrations.Up(ctx, url, nil) })
}
