package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/store"
)

const keysUsage = `Usage: tidings keys <command> [flags]

  create   make an API key for a tenant with a role; its token is shown once
  list     show a tenant's API keys (never their secrets)
  revoke   stop an API key
  new      print a new random 32-byte key in base64, for TIDINGS_SEAL_KEYS
           (as id:key) or TIDINGS_BLIND_INDEX_KEY
  rotate   re-seal every sealed value that is not in the current format under
           the primary key (TIDINGS_SEAL_PRIMARY), a page of rows per
           transaction; rerun it after an interruption and it continues.
           --check only reports which keys still seal values.
  reindex  re-key a tenant's patient indexes (--tenant T, or --all) made
           with an older blind index key version to its current one, in
           pages; rerun it after an interruption and it continues.
           --check only counts the rows of each version.
`

// cliActor is how the audit log names an operator at the command line.
const cliActor = "cli"

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runGroup(ctx, "keys", keysUsage, map[string]action{
		"new": func(_ context.Context, args []string, stdout, stderr io.Writer) error {
			fs := newFlags("keys new", "Prints a new random 32-byte key in base64, for TIDINGS_SEAL_KEYS (as id:key)\nor TIDINGS_BLIND_INDEX_KEY.", stderr)
			if err := fs.Parse(args); err != nil {
				return err
			}
			fmt.Fprintln(stdout, newKey())
			return nil
		},
		"create": runKeysCreate, "list": runKeysList, "revoke": runKeysRevoke, "rotate": runKeysRotate, "reindex": runKeysReindex,
	}, args, stdout, stderr)
}

func runKeysCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys create --tenant T --role ROLE [flags]", `Makes an API key for /v1 with one role in one tenant (creating the tenant if
needed) and prints its token, "tdk_<id>_<secret>", once: Tidings keeps only
its hash. Roles: integration (sources, subscriptions), operator (workflows,
runs, events), contacts (patient contacts), compliance (policies,
disclosures), admin (keys, and all of the above).`, stderr)
	tenant := fs.String("tenant", "", "tenant the key acts for")
	role := fs.String("role", "", "integration | operator | contacts | compliance | admin")
	name := fs.String("name", "", "what the key is for, shown by keys list")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 2160h for 90 days (0: no expiry)")
	tokenFile := fs.String("token-file", "", "write the token to this file (mode 0600) instead of standard output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !subscriptionID.MatchString(*tenant) {
		fs.Usage()
		return usageError{"--tenant is required: 1-64 of A-Z a-z 0-9 . _ -"}
	}
	r, err := access.ParseRole(*role)
	if err != nil {
		fs.Usage()
		return usageError{"--role: " + err.Error()}
	}
	if *expires < 0 {
		return usageError{"--expires must not be negative"}
	}
	st, err := openStoreOnly(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.EnsureTenant(ctx, *tenant, *tenant); err != nil {
		return err
	}
	k, token, err := (&access.Service{Store: st}).Create(ctx, *tenant, r, *name, *expires, cliActor)
	if err != nil {
		return err
	}
	if *tokenFile != "" {
		if err := os.WriteFile(*tokenFile, []byte(token+"\n"), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "key %s (%s) created for tenant %q; its token is in %s\n", k.ID, k.Role, k.TenantID, *tokenFile)
		return nil
	}
	fmt.Fprintf(stderr, "key %s (%s) created for tenant %q; its token, shown only now:\n", k.ID, k.Role, k.TenantID)
	fmt.Fprintln(stdout, token)
	return nil
}

func runKeysList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys list --tenant T", "Lists a tenant's API keys: id, role, name, created, expiry, revocation.", stderr)
	tenant := fs.String("tenant", "", "tenant whose keys to list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tenant == "" {
		fs.Usage()
		return usageError{"--tenant is required"}
	}
	st, err := openStoreOnly(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	keys, err := (&access.Service{Store: st}).List(ctx, *tenant)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tNAME\tCREATED\tEXPIRES\tREVOKED")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Role, k.Name, k.CreatedAt.Format(time.RFC3339), when(k.ExpiresAt), when(k.RevokedAt))
	}
	return tw.Flush()
}

func runKeysRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys revoke --tenant T ID", "Revokes a tenant's API key; it stops working within "+access.CacheTTL.String()+".", stderr)
	tenant := fs.String("tenant", "", "tenant the key belongs to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tenant == "" || fs.NArg() != 1 {
		fs.Usage()
		return usageError{"keys revoke needs --tenant and one key id"}
	}
	st, err := openStoreOnly(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := (&access.Service{Store: st}).Revoke(ctx, *tenant, fs.Arg(0), cliActor); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "key %s revoked\n", fs.Arg(0))
	return nil
}

// errStaleValues is a check or rotation that leaves values an old key or
// format seals: the key cannot be removed yet.
var errStaleValues = errors.New("some values are not sealed with the primary key in the current format")

func runKeysRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys rotate [--check] [--page N]", `Re-seals every sealed column (events, contacts, notices, subscriptions,
sources, runs, engagements, segment members) with the primary key and binds
each value to its tenant, table, column and row. Rows already current are
skipped, so it is safe to rerun. The last lines say which configured keys
still seal values: a key with none can be removed from TIDINGS_SEAL_KEYS.
Needs TIDINGS_DATABASE_URL, TIDINGS_SEAL_KEYS, TIDINGS_SEAL_PRIMARY (with
more than one key) and TIDINGS_BLIND_INDEX_KEY.`, stderr)
	check := fs.Bool("check", false, "only count what each key and format seals; change nothing")
	page := fs.Int("page", 500, "rows per transaction")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 || *page <= 0 {
		fs.Usage()
		return usageError{"keys rotate takes only --check and --page (positive)"}
	}
	cfg, err := loadConfig(config.RoleMigrate)
	if err != nil {
		return err
	}
	keys, err := cfg.Keyring()
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, keys, store.Options{MaxOpenConns: 2})
	if err != nil {
		return err
	}
	defer st.Close()
	failed := 0
	if !*check {
		progress, err := st.Rotate(ctx, store.RotateOptions{PageSize: *page, Progress: func(p store.RotateProgress) error {
			if p.Done {
				fmt.Fprintf(stdout, "%s: %d re-sealed with %s, %d could not be opened (%d pages)\n",
					p.Table, p.Resealed, keys.Primary(), p.Unopenable, p.Pages)
			}
			return nil
		}})
		if err != nil {
			return err
		}
		total := 0
		for _, p := range progress {
			total, failed = total+p.Resealed, failed+p.Unopenable
		}
		fmt.Fprintf(stdout, "rotated: %d values re-sealed, %d could not be opened\n", total, failed)
		if err := st.AuditSealRotation(ctx, keys.Primary(), total, failed); err != nil {
			return fmt.Errorf("audit the rotation: %w", err)
		}
	}
	uses, err := st.SealedUses(ctx)
	if err != nil {
		return err
	}
	byKey, stale := map[string]int64{}, int64(0)
	for _, u := range uses {
		byKey[u.KeyID] += u.Values
		if u.Version != 2 || u.KeyID != keys.Primary() {
			stale += u.Values
			fmt.Fprintf(stdout, "%s.%s: %d values in format %d under %s\n", u.Table, u.Column, u.Values, u.Version, u.KeyID)
		}
	}
	for _, id := range keys.IDs() {
		switch {
		case id == keys.Primary():
			fmt.Fprintf(stdout, "%d values sealed with %s (primary)\n", byKey[id], id)
		case byKey[id] == 0:
			fmt.Fprintf(stdout, "no rows sealed with %s\n", id)
		default:
			fmt.Fprintf(stdout, "%d values still sealed with %s\n", byKey[id], id)
		}
	}
	if stale > 0 || failed > 0 {
		return errStaleValues
	}
	return nil
}
