package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/tidings-health/tidings/store"
)

// errStaleIndexes is a reindex or check that leaves rows indexed with an
// older index key version: that version's key cannot be removed yet.
var errStaleIndexes = errors.New("some rows are indexed with an older index key version")

func runKeysReindex(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys reindex (--tenant T | --all) [--check] [--page N]", `Re-keys a tenant's patient indexes (contacts, engagements, segment members,
disclosures, runs) made with an older blind index key version, or before
versions, to the tenant's current version (TIDINGS_BLIND_INDEX_PRIMARY, or
the tenant's in TIDINGS_BLIND_INDEX_TENANTS), a page of rows per
transaction, printing a line per page. Rows already current are skipped, so
it is safe to rerun after an interruption. The last lines count the rows of
each older version left: a version no tenant's rows use can be removed from
TIDINGS_BLIND_INDEX_KEY (version 0, the rows from before versions, needs
version 1). Runs as the tables' owner (TIDINGS_DATABASE_URL of migrate):
the service may not rewrite disclosures.`, stderr)
	tenant := fs.String("tenant", "", "the tenant to re-key")
	all := fs.Bool("all", false, "re-key every tenant")
	check := fs.Bool("check", false, "only count the rows of each version; change nothing")
	page := fs.Int("page", 500, "rows per transaction")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 || *page <= 0 || (*tenant == "") == !*all {
		fs.Usage()
		return usageError{"keys reindex takes --tenant T or --all, --check and --page (positive)"}
	}
	st, err := openOperatorStore(ctx, true)
	if err != nil {
		return err
	}
	defer st.Close()
	tenants := []string{*tenant}
	if *all {
		if tenants, err = st.AuditTenants(ctx); err != nil {
			return err
		}
	}
	stale := false
	for _, t := range tenants {
		left, err := reindexTenant(ctx, st, t, *check, *page, stdout)
		if err != nil {
			return fmt.Errorf("tenant %q: %w", t, err)
		}
		stale = stale || left
	}
	if stale {
		return errStaleIndexes
	}
	return nil
}

// reindexTenant re-keys (unless check) one tenant and reports what is
// left on older versions; left is true when any row is.
func reindexTenant(ctx context.Context, st *store.Store, tenant string, check bool, page int, stdout io.Writer) (left bool, err error) {
	version := st.IndexVersion(tenant)
	if !check {
		progress, err := st.Reindex(ctx, tenant, store.ReindexOptions{PageSize: page, Progress: func(p store.ReindexProgress) error {
			fmt.Fprintf(stdout, "%s %s: page %d, %d re-keyed to v%d, %d without a known patient\n", tenant, p.Table, p.Pages, p.Rekeyed, version, p.Unresolved)
			return nil
		}})
		if err != nil {
			return false, err
		}
		rekeyed, unresolved := 0, 0
		for _, p := range progress {
			rekeyed, unresolved = rekeyed+p.Rekeyed, unresolved+p.Unresolved
		}
		fmt.Fprintf(stdout, "%s: %d rows re-keyed to v%d, %d left without a known patient\n", tenant, rekeyed, version, unresolved)
		if err := st.AuditReindex(ctx, tenant, rekeyed, unresolved); err != nil {
			return false, fmt.Errorf("audit the reindex: %w", err)
		}
	}
	uses, err := st.IndexUses(ctx, tenant)
	if err != nil {
		return false, err
	}
	for _, u := range uses {
		if u.Version != version {
			left = true
			fmt.Fprintf(stdout, "%s %s: %d rows still on v%d\n", tenant, u.Table, u.Rows, u.Version)
		}
	}
	if !left {
		fmt.Fprintf(stdout, "%s: every row on v%d\n", tenant, version)
	}
	return left, nil
}
