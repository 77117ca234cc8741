package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/store"
)

const keysUsage = `Usage: tidings keys <action> [flags]

Actions:
  new       print a new random 32-byte key in base64, for TIDINGS_SEAL_KEYS
            (as id:key) or TIDINGS_BLIND_INDEX_KEY
  rotate    re-seal every sealed value that is not in the current format
            under the primary key (TIDINGS_SEAL_PRIMARY), a page of rows per
            transaction; rerun it after an interruption and it continues.
            --check only reports which keys still seal values.
`

// runKeys is the keys command group: each action is its own function.
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return usageError{"keys needs an action: new or rotate"}
	}
	switch args[0] {
	case "new":
		return runKeysNew(args[1:], stdout, stderr)
	case "rotate":
		return runKeysRotate(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, keysUsage)
		return nil
	default:
		fmt.Fprint(stderr, keysUsage)
		return usageError{fmt.Sprintf("unknown keys action %q", args[0])}
	}
}

func runKeysNew(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys new", "Prints a new random 32-byte key in base64, for TIDINGS_SEAL_KEYS (as id:key)\nor TIDINGS_BLIND_INDEX_KEY.", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usageError{"keys new takes no arguments"}
	}
	fmt.Fprintln(stdout, newKey())
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
