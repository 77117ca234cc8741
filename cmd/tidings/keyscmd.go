package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/tidings-health/tidings/access"
)

const keysUsage = `Usage: tidings keys <command> [flags]

  create   make an API key for a tenant with a role; its token is shown once
  list     show a tenant's API keys (never their secrets)
  revoke   stop an API key
  new      print a new random 32-byte key in base64, for TIDINGS_SEAL_KEYS
           (as id:key) or TIDINGS_BLIND_INDEX_KEY
`

// cliActor is how the audit log names an operator at the command line.
const cliActor = "cli"

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return usageError{"keys needs a command"}
	}
	switch args[0] {
	case "new":
		fs := newFlags("keys new", "Prints a new random 32-byte key in base64, for TIDINGS_SEAL_KEYS (as id:key)\nor TIDINGS_BLIND_INDEX_KEY.", stderr)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		fmt.Fprintln(stdout, newKey())
		return nil
	case "create":
		return runKeysCreate(ctx, args[1:], stdout, stderr)
	case "list":
		return runKeysList(ctx, args[1:], stdout, stderr)
	case "revoke":
		return runKeysRevoke(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, keysUsage)
		return nil
	}
	fmt.Fprint(stderr, keysUsage)
	return usageError{fmt.Sprintf("unknown keys command %q", args[0])}
}

func runKeysCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys create --tenant T --role ROLE [flags]", `Makes an API key for /v1 with one role in one tenant (creating the tenant if
needed) and prints its token, "tdk_<id>_<secret>", once: Tidings keeps only
its hash. Roles: integration (sources, subscriptions), operator (workflows,
runs, events), contacts (patient contacts), compliance (policies), admin
(keys, and all of the above).`, stderr)
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
