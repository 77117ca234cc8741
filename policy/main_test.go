package policy_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/tidings-health/tidings/migrations"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/testenv"
)

// TestMain lets the test binary be the sandbox child: the sandbox tests
// start this same executable with "policy sandbox", as serve starts the
// tidings binary, so they run the real child without building one.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "policy" && os.Args[2] == "sandbox" {
		if err := policy.ServeSandbox(context.Background(), os.Args[3:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// The per-tenant tests keep revisions in a real database.
	testenv.Main(m, func(ctx context.Context, url string) error { return migrations.Up(ctx, url, nil) })
}
