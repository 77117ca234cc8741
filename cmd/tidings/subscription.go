package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"text/tabwriter"
	"time"

	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
)

var subscriptionID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func runSubscription(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "add" && args[0] != "list") {
		fmt.Fprint(stderr, "Usage: tidings subscription add|list [flags]\n\n  add   register a FHIR subscription (and its tenant) and make its secret\n  list  show every subscription with its handshake and heartbeat status\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return usageError{"subscription needs add or list"}
	}
	if args[0] == "list" {
		return runSubscriptionList(ctx, args[1:], stdout, stderr)
	}
	fs := newFlags("subscription add --id ID --tenant TENANT [flags]", `Registers a FHIR subscription that may POST to /fhir/r4/notify/{tenant}/{id}
(printed), creating its tenant if needed, and makes a random secret for it.
Configure the FHIR server's Subscription.channel.endpoint with that URL and its
Subscription.channel.header with "Authorization: Bearer <secret>". The secret is
shown once (or written to --secret-file); Tidings keeps only its hash. Ids are
per tenant: another tenant may use the same id.`, stderr)
	id := fs.String("id", "", "subscription id, the {subscription} of the notify URL ([A-Za-z0-9._-], up to 64)")
	tenant := fs.String("tenant", "", "tenant the subscription's data belongs to")
	tenantName := fs.String("tenant-name", "", "tenant's display name when it is created (default: the id)")
	topic := fs.String("topic", "", "SubscriptionTopic canonical or criteria, for reference")
	source := fs.String("source", "", "base URL of the FHIR server, for reference")
	secretFile := fs.String("secret-file", "", "write the secret to this file (mode 0600) instead of standard output")
	secretEnv := fs.String("secret-env", "", "take the secret from this environment variable (at least 24 characters) instead of making one")
	sourceID := fs.String("source-id", "", "FHIR source (tidings source add) to fetch id-only/empty notifications and missed events from")
	crit := fs.String("criteria", "", "search used for empty notifications, pings and gap recovery, e.g. ExplanationOfBenefit?type=professional (default: every ExplanationOfBenefit)")
	hmacFile := fs.String("hmac-key-file", "", "file holding the key the source signs notifications with (X-Signature: HMAC-SHA256 of \"<X-Signature-Timestamp>.<body>\"); when set, unsigned, untimed and replayed notifications are refused")
	heartbeat := fs.Duration("heartbeat-period", 0, "the subscription's heartbeat period; silent after twice that without one (0: not watched)")
	ifMissing := fs.Bool("if-missing", false, "succeed without changes when the subscription exists (for one-shot setup jobs)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var problems []string
	if !subscriptionID.MatchString(*id) {
		problems = append(problems, "--id is required: 1-64 of A-Z a-z 0-9 . _ -")
	}
	if !subscriptionID.MatchString(*tenant) {
		problems = append(problems, "--tenant is required: 1-64 of A-Z a-z 0-9 . _ -")
	}
	secret := seal.NewToken()
	if *secretEnv != "" {
		secret = os.Getenv(*secretEnv)
		if len(secret) < 24 {
			problems = append(problems, "--secret-env names a variable that is unset or shorter than 24 characters")
		}
	}
	if len(problems) > 0 {
		fs.Usage()
		return usageError{fmt.Sprint(problems)}
	}
	// A signing key is read, checked and sealed before anything is stored, so
	// a bad key file never leaves a subscription that accepts unsigned bodies.
	var hmacKey []byte
	if *hmacFile != "" {
		key, err := os.ReadFile(*hmacFile)
		if err != nil || len(bytes.TrimSpace(key)) < 16 {
			return usageError{"--hmac-key-file: want a readable file holding at least 16 bytes of key"}
		}
		hmacKey = bytes.TrimSpace(key)
	}
	st, err := openOperatorStore(ctx, hmacKey != nil)
	if err != nil {
		return err
	}
	defer st.Close()
	if *tenantName == "" {
		*tenantName = *tenant
	}
	if err := st.EnsureTenant(ctx, *tenant, *tenantName); err != nil {
		return err
	}
	sub := intake.Subscription{ID: *id, TenantID: *tenant, Topic: *topic, SourceURL: *source, SourceID: *sourceID,
		Criteria: *crit, HeartbeatPeriod: *heartbeat, SigningKey: hmacKey}
	err = st.CreateSubscription(ctx, sub, secret)
	if *sourceID != "" && errors.Is(err, fault.Invalid) {
		return fmt.Errorf("source %q is not registered for tenant %q (tidings source add)", *sourceID, *tenant)
	}
	if errors.Is(err, store.ErrDuplicate) {
		if *ifMissing {
			fmt.Fprintf(stdout, "subscription %q already exists; left as it is\n", *id)
			return nil
		}
		return fmt.Errorf("subscription %q already exists", *id)
	}
	if err != nil {
		return err
	}
	base := os.Getenv("TIDINGS_API_BASE_URL")
	if base == "" {
		base = "{TIDINGS_API_BASE_URL}"
	}
	fmt.Fprintf(stdout, "notify URL: %s\n", intake.NotifyURL(base, *tenant, *id))
	if *secretEnv != "" {
		fmt.Fprintf(stdout, "subscription %q registered for tenant %q with the secret from $%s\n", *id, *tenant, *secretEnv)
		return nil
	}
	if *secretFile != "" {
		if err := os.WriteFile(*secretFile, []byte(secret+"\n"), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "subscription %q registered for tenant %q; its secret is in %s\n", *id, *tenant, *secretFile)
		return nil
	}
	fmt.Fprintf(stdout, "subscription %q registered for tenant %q.\nSet on the FHIR server's Subscription.channel.header (shown only now):\nAuthorization: Bearer %s\n", *id, *tenant, secret)
	return nil
}

func runSubscriptionList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("subscription list", "Lists every subscription with its status, last handshake and heartbeat.", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := openStoreOnly(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	subs, err := st.Subscriptions(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT\tSTATUS\tSOURCE\tLAST HANDSHAKE\tLAST HEARTBEAT\tHEARTBEATS\tEVENTS SINCE START\tSILENT SINCE")
	for _, s := range subs {
		src := "-"
		if s.SourceID != "" {
			src = s.SourceID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.ID, s.TenantID, s.Status, src, when(s.LastHandshakeAt), when(s.LastHeartbeatAt), s.Heartbeats, s.EventsSinceStart, when(s.SilentSince))
	}
	return tw.Flush()
}

func when(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// openStoreOnly connects with just TIDINGS_DATABASE_URL, for operator
// commands that seal nothing.
func openStoreOnly(ctx context.Context) (*store.Store, error) {
	return openOperatorStore(ctx, false)
}

// openOperatorStore connects for an operator command; withKeys also reads
// the sealing keys (TIDINGS_SEAL_KEYS, TIDINGS_BLIND_INDEX_KEY), for
// commands that store secrets.
func openOperatorStore(ctx context.Context, withKeys bool) (*store.Store, error) {
	cfg, err := loadConfig(config.RoleMigrate)
	if err != nil {
		return nil, err
	}
	var keys *seal.Keyring
	if withKeys {
		if keys, err = cfg.Keyring(); err != nil {
			return nil, err
		}
	}
	return store.Open(ctx, cfg.DatabaseURL, keys, store.Options{MaxOpenConns: 2})
}
