package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
)

const auditUsage = `Usage: tidings audit verify|export|keygen [flags]

  verify   walk every tenant's audit chain, recompute each hash and check it
           against the signed checkpoints (database and checkpoint folder);
           exit status 1 on any failure
  export   write a tenant's audit rows of a time range as JSON lines, with
           the checkpoints an auditor needs to verify them
  keygen   print a new chain key, a new checkpoint signing key and its
           public key
`

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runGroup(ctx, "audit", auditUsage, map[string]action{
		"verify": runAuditVerify, "export": runAuditExport,
		"keygen": func(_ context.Context, args []string, stdout, stderr io.Writer) error {
			return runAuditKeygen(args, stdout, stderr)
		},
	}, args, stdout, stderr)
}

func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit verify [--tenant T] [--checkpoints DIR] [--public-key FILE] [--excerpt FILE]",
		`Walks each tenant's audit chain from seq 1, recomputes every HMAC, checks that
every link has its audit row, that seqs are contiguous and in (xid, id) order, and
checks every signed checkpoint of the database and of the checkpoint folder. Prints
one line per tenant and names the first bad position (seq, audit row) with the
reason. Needs TIDINGS_DATABASE_URL and TIDINGS_AUDIT_KEYS (and TIDINGS_AUDIT_PRIMARY
with several keys). With --excerpt, checks a file of tidings audit export instead,
without the database.`, stderr)
	tenant := fs.String("tenant", "", "verify this tenant only")
	dir := fs.String("checkpoints", "", "checkpoint folder (default TIDINGS_AUDIT_CHECKPOINT_DIR)")
	pubFile := fs.String("public-key", "", `file of "id:base64" Ed25519 public keys, one a line (default: the key of TIDINGS_AUDIT_SIGNING_KEY)`)
	excerpt := fs.String("excerpt", "", "verify this export file instead of the database")
	if err := fs.Parse(args); err != nil {
		return err
	}
	role := config.RoleAudit
	if *excerpt != "" {
		role = 0 // no database
	}
	cfg, err := loadAuditConfig(role)
	if err != nil {
		return err
	}
	keys, err := cfg.AuditKeyring()
	if err != nil {
		return err
	}
	pub, err := checkpointPublicKeys(cfg, *pubFile)
	if err != nil {
		return err
	}
	if *excerpt != "" {
		f, err := os.Open(*excerpt)
		if err != nil {
			return err
		}
		defer f.Close()
		rep, err := audit.VerifyExcerpt(f, keys, pub)
		if err != nil {
			fmt.Fprintf(stdout, "excerpt %s: FAIL: %v\n", *excerpt, err)
			return errors.New("the excerpt does not verify")
		}
		anchor := "anchored in signed checkpoints at both ends"
		if !rep.Anchored {
			anchor = "its last rows are not covered by a checkpoint yet"
		}
		fmt.Fprintf(stdout, "excerpt %s: seq %d-%d, %d rows (%d in the range asked for), %s: OK\n",
			*excerpt, rep.FromSeq, rep.ToSeq, rep.Rows, rep.InRange, anchor)
		return nil
	}
	if *dir == "" {
		*dir = cfg.AuditCheckpointDir
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "no checkpoint folder (--checkpoints or TIDINGS_AUDIT_CHECKPOINT_DIR): only the database's checkpoints are checked, and a truncated tail may go unnoticed")
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, nil, store.Options{MaxOpenConns: 2})
	if err != nil {
		return err
	}
	defer st.Close()
	v := &audit.Verifier{Store: st, Keys: keys, PublicKeys: pub, CheckpointDir: *dir}
	tenants := []string{*tenant}
	if *tenant == "" {
		if tenants, err = v.Tenants(ctx); err != nil {
			return err
		}
	}
	failed := 0
	for _, t := range tenants {
		rep, err := v.Verify(ctx, t)
		if err != nil {
			return fmt.Errorf("tenant %s: %w", t, err)
		}
		fmt.Fprintln(stdout, rep)
		if !rep.OK() {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("the audit log of %d of %d tenants does not verify", failed, len(tenants))
	}
	return nil
}

func runAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit export --tenant T --from TIME --to TIME [--out FILE]",
		`Writes, as JSON lines, the tenant's chained audit rows dated from --from (included)
to --to (excluded), each with its seq, key id and hash, then the signed checkpoints
around them. The excerpt runs from the checkpoint before its first row to the first
checkpoint at or after its last, so that it verifies on its own
(tidings audit verify --excerpt FILE); rows of that span dated outside the range
have "in_range": false. Audit rows hold no PHI. Needs TIDINGS_DATABASE_URL.`, stderr)
	tenant := fs.String("tenant", "", "tenant (required)")
	fromS := fs.String("from", "", "start, RFC 3339 (required)")
	toS := fs.String("to", "", "end, RFC 3339 (required)")
	out := fs.String("out", "", "write to this file instead of standard output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	from, ferr := time.Parse(time.RFC3339, *fromS)
	to, terr := time.Parse(time.RFC3339, *toS)
	if *tenant == "" || ferr != nil || terr != nil || !from.Before(to) {
		fs.Usage()
		return usageError{"audit export needs --tenant and --from before --to, as RFC 3339 times"}
	}
	st, err := openStoreOnly(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	w := stdout
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	sum, err := audit.Export(ctx, st, w, *tenant, from, to)
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	if sum.Rows == 0 {
		fmt.Fprintln(stderr, "no chained audit rows in that range")
		return nil
	}
	fmt.Fprintf(stderr, "exported seq %d-%d: %d rows (%d in the range), %d checkpoints\n",
		sum.FromSeq, sum.ToSeq, sum.Rows, sum.InRange, sum.Checkpoints)
	return nil
}

func runAuditKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit keygen [--id ID] [--public-key-out FILE]",
		`Prints a new HMAC key for the audit chain (TIDINGS_AUDIT_KEYS; to rotate, add it to
the list and name it in TIDINGS_AUDIT_PRIMARY), a new Ed25519 key that signs
checkpoints (TIDINGS_AUDIT_SIGNING_KEY) and that key's public half, which an auditor
passes to tidings audit verify --public-key. Keep the first two in a secret store.`, stderr)
	id := fs.String("id", time.Now().UTC().Format("20060102"), "suffix of the key ids")
	pubOut := fs.String("public-key-out", "", "also write the public key line to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	chainKey := "audit-" + *id + ":" + seal.NewRandomKey()
	if _, err := audit.ParseKeys(chainKey, ""); err != nil {
		return usageError{fmt.Sprintf("--id: %v", err)}
	}
	signing := "sign-" + *id + ":" + seal.NewRandomKey() // 32 random bytes: an Ed25519 seed
	signer, err := audit.ParseSigningKey(signing)
	if err != nil {
		return usageError{fmt.Sprintf("--id: %v", err)}
	}
	fmt.Fprintf(stdout, "TIDINGS_AUDIT_KEYS=%s\nTIDINGS_AUDIT_SIGNING_KEY=%s\n# public key, for tidings audit verify --public-key FILE:\n%s\n",
		chainKey, signing, signer.PublicKeyLine())
	if *pubOut != "" {
		return os.WriteFile(*pubOut, []byte(signer.PublicKeyLine()+"\n"), 0o644)
	}
	return nil
}

// loadAuditConfig reads the environment for an audit command; role 0
// checks nothing (the keys are checked where they are used).
func loadAuditConfig(role config.Role) (config.Config, error) {
	if role == 0 {
		cfg, problems := config.FromEnv(os.LookupEnv)
		if len(problems) > 0 {
			return cfg, fmt.Errorf("configuration is not usable: %v", problems)
		}
		return cfg, nil
	}
	return loadConfig(role)
}

// checkpointPublicKeys reads the keys checkpoints are verified with: a
// file, or the public half of the configured signing key.
func checkpointPublicKeys(cfg config.Config, file string) (audit.PublicKeys, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		pub, err := audit.ParsePublicKeys(string(b))
		if err != nil {
			return nil, fmt.Errorf("--public-key %s: %w", file, err)
		}
		return pub, nil
	}
	if cfg.AuditSigningKey == "" {
		return nil, usageError{"checkpoints are verified with --public-key FILE or the key of TIDINGS_AUDIT_SIGNING_KEY: give one"}
	}
	signer, err := cfg.AuditSigner()
	if err != nil {
		return nil, err
	}
	return audit.ParsePublicKeys(signer.PublicKeyLine())
}
