package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/seal"
)

// Config is everything the binary reads from the environment.
type Config struct {
	DatabaseURL   string // TIDINGS_DATABASE_URL (secret: may hold a password)
	RedisAddr     string // TIDINGS_REDIS_ADDR
	RedisPassword string // TIDINGS_REDIS_PASSWORD (secret)
	RedisDB       int    // TIDINGS_REDIS_DB

	SealKeys      string // TIDINGS_SEAL_KEYS "id:base64,..." (secret)
	SealPrimary   string // TIDINGS_SEAL_PRIMARY: id of the key that seals; required with more than one key
	BlindIndexKey string // TIDINGS_BLIND_INDEX_KEY base64, or "1:base64,2:base64" by version (secret)
	// BlindIndexPrimary is the version new blind indexes use
	// (TIDINGS_BLIND_INDEX_PRIMARY); required with more than one version.
	BlindIndexPrimary int
	// BlindIndexTenants moves single tenants to another version
	// (TIDINGS_BLIND_INDEX_TENANTS "tenant=2,…"): one tenant's rotation.
	BlindIndexTenants string
	ListenAddr        string // TIDINGS_LISTEN_ADDR
	// WorkerAddr is where the worker answers /healthz, /readyz and
	// /metrics (TIDINGS_WORKER_ADDR).
	WorkerAddr string
	// HealthAddr, when set, is a second address where serve answers
	// /healthz, /readyz and /metrics, outside the connection bound of
	// ListenAddr (TIDINGS_HEALTH_ADDR); empty, only ListenAddr does.
	HealthAddr string
	// MetricsToken is the bearer token /metrics asks for, on serve and the
	// worker (TIDINGS_METRICS_TOKEN, secret); empty, /metrics answers
	// loopback clients only.
	MetricsToken   string
	PublicBaseURL  string // TIDINGS_PUBLIC_BASE_URL
	APIBaseURL     string // TIDINGS_API_BASE_URL: where FHIR servers reach this API (for Subscriptions Tidings creates)
	RatePerSecond  float64
	RateBurst      int
	TrustedProxies []string // TIDINGS_TRUSTED_PROXIES: addresses or CIDRs, comma-separated
	MaxBodyBytes   int64
	MaxInFlight    int // TIDINGS_MAX_IN_FLIGHT: requests serve handles at once; more wait a second for a slot, then get 429
	MaxConnections int // TIDINGS_MAX_CONNECTIONS: connections serve holds open at once (0: see Connections)
	LogLevel       slog.Level
	LogFormat      string
	Concurrency    int
	// WorkerNice is the nice value the worker process lowers all its
	// threads to (TIDINGS_WORKER_NICE, 0-19; 0 leaves them as started):
	// where serve and worker share cores, intake is served first.
	WorkerNice     int
	ClaimLease     time.Duration // TIDINGS_CLAIM_LEASE: how long a worker's claim on a batch of events holds
	PendingGrace   time.Duration // TIDINGS_PENDING_GRACE: when a run's unfinished sends are re-driven
	ReconcileEvery time.Duration
	MonitorEvery   time.Duration // TIDINGS_MONITOR_EVERY: gap and silence checks
	// TIDINGS_SCHEDULE_EVERY: how often wake-ups are promoted from Postgres
	// into Redis and lost ones restored.
	ScheduleEvery time.Duration
	// TIDINGS_WAKE_HORIZON: wake-ups due within it wait in Redis; later
	// ones wait in Postgres.
	WakeHorizon time.Duration
	// TIDINGS_WAKE_SLACK: how overdue a queued wake-up must be before the
	// scheduler takes it for lost and enqueues it again.
	WakeSlack time.Duration
	GapSettle time.Duration // TIDINGS_GAP_SETTLE: how late an event number may be before it is a gap
	// AllowPrivateSources lets FHIR sources live on loopback/private addresses
	// (TIDINGS_ALLOW_PRIVATE_SOURCES; dev and tests). Off, a source cannot
	// point Tidings at internal services.
	AllowPrivateSources bool
	// TIDINGS_WEBHOOKS_ALLOW_PRIVATE: webhook endpoints may be plain http
	// on loopback or private addresses (development, tests).
	WebhooksAllowPrivate bool
	// TIDINGS_WEBHOOK_EVERY: how often the worker fans out and sends.
	WebhookEvery time.Duration
	// TIDINGS_WEBHOOK_RETRIES: the waits after each failed attempt, comma
	// separated; after the last the message is dead. Empty: the default
	// schedule (5s, 5m, 30m, 2h, 5h, 10h, 10h).
	WebhookRetries string

	PolicyDir       string        // TIDINGS_POLICY_DIR: policies from a directory instead of the embedded ones
	PolicyBundle    string        // TIDINGS_POLICY_BUNDLE: an OPA bundle (.tar.gz from opa build) instead
	PolicyPublicKey string        // TIDINGS_POLICY_PUBLIC_KEY: PEM file; the bundle must be signed by it
	PolicyWatch     time.Duration // TIDINGS_POLICY_WATCH: how often a dir or bundle is checked for changes

	// The audit chain (worker): HMAC keys, the one that chains new rows,
	// the checkpoint signing key and where checkpoints are written outside
	// the database.
	AuditKeys            string        // TIDINGS_AUDIT_KEYS "id:base64,..." (secret)
	AuditPrimary         string        // TIDINGS_AUDIT_PRIMARY: required with more than one key
	AuditSigningKey      string        // TIDINGS_AUDIT_SIGNING_KEY "id:base64 of an Ed25519 seed" (secret)
	AuditCheckpointDir   string        // TIDINGS_AUDIT_CHECKPOINT_DIR
	AuditChainEvery      time.Duration // TIDINGS_AUDIT_CHAIN_EVERY: between chainer passes
	AuditCheckpointRows  int64         // TIDINGS_AUDIT_CHECKPOINT_ROWS: rows chained before a checkpoint
	AuditCheckpointEvery time.Duration // TIDINGS_AUDIT_CHECKPOINT_EVERY: the longest a chained row waits for one

	SMTPHost        string
	SMTPPort        int
	SMTPUsername    string
	SMTPPassword    string // secret
	SMTPFrom        string
	SMTPRequireTLS  bool
	SMTPImplicitTLS bool
	SMTPCAFile      string
	// TIDINGS_SMTP_POOL_SIZE: SMTP sessions the worker keeps open at most;
	// 0 (unset) sizes the pool to Concurrency. See SMTPSessions.
	SMTPPoolSize int
	// TIDINGS_DKIM_KEYS: tenant:domain:selector:key.pem entries, comma
	// separated; see DKIMKeys.
	DKIMKeys string
	// TIDINGS_SMIME_KEYS (tenant:cert.pem:key.pem) and TIDINGS_OPENPGP_KEYS
	// (tenant:key.asc), comma separated: the keys that sign each tenant's
	// notices encrypted for a patient's own key; see MessageSignerSpecs.
	SMIMEKeys, OpenPGPKeys string
	// SMS is the SMS provider (TIDINGS_SMS_*); see SMS.
	SMS SMS

	// The portal (serve): how long a notice's link works, and a verified
	// session.
	PortalTokenTTL   time.Duration // TIDINGS_PORTAL_TOKEN_TTL, default 720h (30 days)
	PortalSessionTTL time.Duration // TIDINGS_PORTAL_SESSION_TTL, default 15m
	// TIDINGS_DISCLOSURE_RETENTION_YEARS: how long the accounting of
	// disclosures is kept (tidings disclosures purge removes what is
	// older). HIPAA 164.528 gives a patient six years back: never less.
	DisclosureRetentionYears int
	// TIDINGS_BOUNCE_SUPPRESS_AFTER: how many permanent bounces (POST
	// /v1/bounces) of an address suppress it; 0 or unset: 2.
	BounceSuppressAfter int
	// Links in mail: one-click unsubscribe and tracking (links.go).
	Links LinkConfig
}

// MinDisclosureRetentionYears is the default and the least retention of
// the accounting of disclosures: HIPAA 164.528 gives six years back.
const MinDisclosureRetentionYears = 6

// DisclosureCutoff is the time before which disclosures may be purged at
// now: the configured number of years back, by the calendar.
func (c Config) DisclosureCutoff(now time.Time) time.Time {
	return now.AddDate(-c.DisclosureRetentionYears, 0, 0)
}

// Role says which process the configuration is for; each checks what it uses.
type Role int

const (
	RoleServe Role = 1 << iota
	RoleWorker
	RoleMigrate
	RoleAudit // tidings audit verify and export: the database and the chain keys
)

// LogValue prints the configuration without its secrets.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("redis_addr", c.RedisAddr),
		slog.String("listen_addr", c.ListenAddr),
		slog.String("worker_addr", c.WorkerAddr),
		slog.String("health_addr", c.HealthAddr),
		slog.Bool("metrics_token_set", c.MetricsToken != ""),
		slog.String("public_base_url", c.PublicBaseURL),
		slog.String("smtp", net.JoinHostPort(c.SMTPHost, strconv.Itoa(c.SMTPPort))),
		slog.Bool("smtp_require_tls", c.SMTPRequireTLS),
		slog.Int("smtp_sessions", c.SMTPSessions()),
		slog.Attr{Key: "sms", Value: c.SMS.LogValue()},
		slog.Int("concurrency", c.Concurrency),
		slog.Int("worker_nice", c.WorkerNice),
		slog.String("audit_checkpoint_dir", c.AuditCheckpointDir),
	)
}

// FromEnv reads the environment (lookup is os.LookupEnv in production).
// Parsing problems are collected and returned together with Validate's.
func FromEnv(lookup func(string) (string, bool)) (Config, []string) {
	var problems []string
	get := func(k, def string) string {
		if v, ok := lookup(k); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
		return def
	}
	geti := func(k string, def int) int {
		v := get(k, "")
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			problems = append(problems, k+" must be an integer")
			return def
		}
		return n
	}
	getf := func(k string, def float64) float64 {
		v := get(k, "")
		if v == "" {
			return def
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			problems = append(problems, k+" must be a number")
			return def
		}
		return n
	}
	getb := func(k string, def bool) bool {
		v := get(k, "")
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			problems = append(problems, k+" must be true or false")
			return def
		}
		return b
	}
	getd := func(k string, def time.Duration) time.Duration {
		v := get(k, "")
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			problems = append(problems, k+" must be a duration such as 5s")
			return def
		}
		return d
	}
	if get("TIDINGS_API_TOKENS", "") != "" {
		problems = append(problems, "TIDINGS_API_TOKENS is no longer read: API keys are kept hashed in the database, each with a tenant and a role; create one with `tidings keys create --tenant ID --role admin` and unset TIDINGS_API_TOKENS")
	}
	c := Config{
		DatabaseURL:          get("TIDINGS_DATABASE_URL", ""),
		RedisAddr:            get("TIDINGS_REDIS_ADDR", "127.0.0.1:6379"),
		RedisPassword:        get("TIDINGS_REDIS_PASSWORD", ""),
		RedisDB:              geti("TIDINGS_REDIS_DB", 0),
		SealKeys:             get("TIDINGS_SEAL_KEYS", ""),
		SealPrimary:          get("TIDINGS_SEAL_PRIMARY", ""),
		BlindIndexKey:        get("TIDINGS_BLIND_INDEX_KEY", ""),
		BlindIndexPrimary:    geti("TIDINGS_BLIND_INDEX_PRIMARY", 0),
		BlindIndexTenants:    get("TIDINGS_BLIND_INDEX_TENANTS", ""),
		ListenAddr:           get("TIDINGS_LISTEN_ADDR", "127.0.0.1:8080"),
		WorkerAddr:           get("TIDINGS_WORKER_ADDR", "127.0.0.1:9091"),
		HealthAddr:           get("TIDINGS_HEALTH_ADDR", ""),
		MetricsToken:         get("TIDINGS_METRICS_TOKEN", ""),
		PublicBaseURL:        get("TIDINGS_PUBLIC_BASE_URL", ""),
		APIBaseURL:           get("TIDINGS_API_BASE_URL", ""),
		RatePerSecond:        getf("TIDINGS_RATE_PER_SECOND", 10000),
		RateBurst:            geti("TIDINGS_RATE_BURST", 20000),
		TrustedProxies:       splitList(get("TIDINGS_TRUSTED_PROXIES", "")),
		MaxBodyBytes:         int64(geti("TIDINGS_MAX_BODY_BYTES", 1<<20)),
		MaxInFlight:          geti("TIDINGS_MAX_IN_FLIGHT", 128),
		MaxConnections:       geti("TIDINGS_MAX_CONNECTIONS", 0),
		LogFormat:            get("TIDINGS_LOG_FORMAT", "json"),
		Concurrency:          geti("TIDINGS_WORKER_CONCURRENCY", 10),
		WorkerNice:           geti("TIDINGS_WORKER_NICE", 10),
		ReconcileEvery:       getd("TIDINGS_RECONCILE_EVERY", 5*time.Second),
		ClaimLease:           getd("TIDINGS_CLAIM_LEASE", 2*time.Minute),
		PendingGrace:         getd("TIDINGS_PENDING_GRACE", 3*time.Minute),
		MonitorEvery:         getd("TIDINGS_MONITOR_EVERY", 30*time.Second),
		ScheduleEvery:        getd("TIDINGS_SCHEDULE_EVERY", 5*time.Second),
		WakeHorizon:          getd("TIDINGS_WAKE_HORIZON", time.Hour),
		WakeSlack:            getd("TIDINGS_WAKE_SLACK", time.Minute),
		GapSettle:            getd("TIDINGS_GAP_SETTLE", time.Minute),
		AllowPrivateSources:  getb("TIDINGS_ALLOW_PRIVATE_SOURCES", false),
		WebhooksAllowPrivate: getb("TIDINGS_WEBHOOKS_ALLOW_PRIVATE", false),
		WebhookEvery:         getd("TIDINGS_WEBHOOK_EVERY", time.Second),
		WebhookRetries:       get("TIDINGS_WEBHOOK_RETRIES", ""),
		PolicyDir:            get("TIDINGS_POLICY_DIR", ""),
		PolicyBundle:         get("TIDINGS_POLICY_BUNDLE", ""),
		PolicyPublicKey:      get("TIDINGS_POLICY_PUBLIC_KEY", ""),
		PolicyWatch:          getd("TIDINGS_POLICY_WATCH", 10*time.Second),
		AuditKeys:            get("TIDINGS_AUDIT_KEYS", ""),
		AuditPrimary:         get("TIDINGS_AUDIT_PRIMARY", ""),
		AuditSigningKey:      get("TIDINGS_AUDIT_SIGNING_KEY", ""),
		AuditCheckpointDir:   get("TIDINGS_AUDIT_CHECKPOINT_DIR", ""),
		AuditChainEvery:      getd("TIDINGS_AUDIT_CHAIN_EVERY", time.Second),
		AuditCheckpointRows:  int64(geti("TIDINGS_AUDIT_CHECKPOINT_ROWS", 1000)),
		AuditCheckpointEvery: getd("TIDINGS_AUDIT_CHECKPOINT_EVERY", 10*time.Second),
		SMTPHost:             get("TIDINGS_SMTP_HOST", ""),
		SMTPPort:             geti("TIDINGS_SMTP_PORT", 0),
		SMTPUsername:         get("TIDINGS_SMTP_USERNAME", ""),
		SMTPPassword:         get("TIDINGS_SMTP_PASSWORD", ""),
		SMTPFrom:             get("TIDINGS_SMTP_FROM", ""),
		SMTPRequireTLS:       getb("TIDINGS_SMTP_REQUIRE_TLS", true),
		SMTPImplicitTLS:      getb("TIDINGS_SMTP_IMPLICIT_TLS", false),
		SMTPCAFile:           get("TIDINGS_SMTP_CA_FILE", ""),
		SMTPPoolSize:         geti("TIDINGS_SMTP_POOL_SIZE", 0),
		DKIMKeys:             get("TIDINGS_DKIM_KEYS", ""),
		PortalTokenTTL:       getd("TIDINGS_PORTAL_TOKEN_TTL", 30*24*time.Hour),
		PortalSessionTTL:     getd("TIDINGS_PORTAL_SESSION_TTL", 15*time.Minute),
	}
	// Set apart from the literal above, whose alignment it would change.
	c.DisclosureRetentionYears = geti("TIDINGS_DISCLOSURE_RETENTION_YEARS", MinDisclosureRetentionYears)
	c.BounceSuppressAfter = geti("TIDINGS_BOUNCE_SUPPRESS_AFTER", 2)
	c.SMIMEKeys, c.OpenPGPKeys = get("TIDINGS_SMIME_KEYS", ""), get("TIDINGS_OPENPGP_KEYS", "")
	c.SMS = smsFromEnv(get)
	c.Links = linkConfig(get, getd)
	if c.SMTPPort == 0 {
		c.SMTPPort = 587 // submission with STARTTLS
		if c.SMTPImplicitTLS {
			c.SMTPPort = 465 // SMTPS
		}
	}
	if err := c.LogLevel.UnmarshalText([]byte(get("TIDINGS_LOG_LEVEL", "info"))); err != nil {
		problems = append(problems, "TIDINGS_LOG_LEVEL must be debug, info, warn or error")
	}
	return c, problems
}

// Validate checks what a role needs and returns every problem found.
func (c Config) Validate(role Role) []string {
	var p []string
	if c.DatabaseURL == "" {
		p = append(p, "TIDINGS_DATABASE_URL is required")
	} else if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		p = append(p, "TIDINGS_DATABASE_URL must be a postgres:// URL")
	}
	if c.BounceSuppressAfter < 0 {
		p = append(p, "TIDINGS_BOUNCE_SUPPRESS_AFTER must be a positive count (0: the default, 2)")
	}
	p = append(p, c.Links.validate()...)
	if c.DisclosureRetentionYears < MinDisclosureRetentionYears {
		p = append(p, fmt.Sprintf("TIDINGS_DISCLOSURE_RETENTION_YEARS must be at least %d (a patient may ask for six years of disclosures)", MinDisclosureRetentionYears))
	}
	if role&(RoleServe|RoleWorker) != 0 {
		p = append(p, c.SMS.problems()...)
	}
	if role&(RoleWorker|RoleAudit) != 0 {
		if _, err := c.AuditKeyring(); err != nil {
			p = append(p, err.Error())
		}
	}
	if role&(RoleServe|RoleWorker) == 0 {
		return p
	}
	if _, _, err := net.SplitHostPort(c.RedisAddr); err != nil {
		p = append(p, "TIDINGS_REDIS_ADDR must be host:port")
	}
	if _, err := c.Keyring(); err != nil {
		p = append(p, strings.Split(err.Error(), "; ")...)
	}
	if c.PublicBaseURL == "" {
		p = append(p, "TIDINGS_PUBLIC_BASE_URL is required (where patients open their notices)")
	} else if u, err := url.Parse(c.PublicBaseURL); err != nil || u.Host == "" {
		p = append(p, "TIDINGS_PUBLIC_BASE_URL must be an absolute URL")
	} else if u.Scheme != "https" && !isLoopback(u.Hostname()) {
		p = append(p, "TIDINGS_PUBLIC_BASE_URL must use https (http only for localhost)")
	}
	if c.MetricsToken != "" && len(c.MetricsToken) < minMetricsToken {
		p = append(p, fmt.Sprintf("TIDINGS_METRICS_TOKEN must be at least %d characters (`tidings keys new` makes a random one)", minMetricsToken))
	}
	if c.PolicyDir != "" && c.PolicyBundle != "" {
		p = append(p, "set TIDINGS_POLICY_DIR or TIDINGS_POLICY_BUNDLE, not both")
	}
	if c.PolicyPublicKey != "" && c.PolicyBundle == "" {
		p = append(p, "TIDINGS_POLICY_PUBLIC_KEY verifies a bundle: set TIDINGS_POLICY_BUNDLE too")
	}
	if role&RoleServe != 0 {
		if c.APIBaseURL != "" {
			if u, err := url.Parse(c.APIBaseURL); err != nil || u.Host == "" || (u.Scheme != "https" && !isLoopback(u.Hostname())) {
				p = append(p, "TIDINGS_API_BASE_URL must be an absolute https URL (http only for localhost)")
			}
		}
		if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
			p = append(p, "TIDINGS_LISTEN_ADDR must be host:port")
		}
		if _, _, err := net.SplitHostPort(c.HealthAddr); c.HealthAddr != "" && err != nil {
			p = append(p, "TIDINGS_HEALTH_ADDR must be host:port")
		}
		if c.RatePerSecond <= 0 || c.RateBurst <= 0 {
			p = append(p, "TIDINGS_RATE_PER_SECOND and TIDINGS_RATE_BURST must be positive")
		}
		if c.SMTPHost != "" && c.SMTPFrom == "" {
			p = append(p, "TIDINGS_SMTP_FROM is required with TIDINGS_SMTP_HOST (serve mails the portal's one-time codes)")
		}
		if c.PortalTokenTTL < 0 || c.PortalSessionTTL < 0 || c.PortalSessionTTL > 24*time.Hour {
			p = append(p, "TIDINGS_PORTAL_TOKEN_TTL must be positive and TIDINGS_PORTAL_SESSION_TTL between 1s and 24h")
		}
		if c.MaxInFlight <= 0 {
			p = append(p, "TIDINGS_MAX_IN_FLIGHT must be positive")
		}
		if c.MaxConnections < 0 || c.MaxConnections > 0 && c.MaxConnections < 2*c.MaxInFlight {
			p = append(p, "TIDINGS_MAX_CONNECTIONS must be at least twice TIDINGS_MAX_IN_FLIGHT (requests waiting for a slot, idle keep-alive connections and probes need connections too), or 0 for the default")
		}
		if c.MaxBodyBytes < 1024 {
			p = append(p, "TIDINGS_MAX_BODY_BYTES must be at least 1024")
		}
		for _, proxy := range c.TrustedProxies {
			if _, err := netip.ParsePrefix(proxy); err != nil {
				if _, err := netip.ParseAddr(proxy); err != nil {
					p = append(p, fmt.Sprintf("TIDINGS_TRUSTED_PROXIES: %q is neither an IP address nor a CIDR", proxy))
				}
			}
		}
	}
	if role&RoleWorker != 0 {
		if c.SMTPHost == "" {
			p = append(p, "TIDINGS_SMTP_HOST is required")
		}
		if _, _, err := net.SplitHostPort(c.WorkerAddr); err != nil {
			p = append(p, "TIDINGS_WORKER_ADDR must be host:port")
		}
		if c.PendingGrace < time.Second {
			p = append(p, "TIDINGS_PENDING_GRACE must be at least 1s (longer than a send takes)")
		}
		if c.ClaimLease < time.Second {
			p = append(p, "TIDINGS_CLAIM_LEASE must be at least 1s (longer than a batch of events takes)")
		}
		if c.SMTPPort <= 0 || c.SMTPPort > 65535 {
			p = append(p, "TIDINGS_SMTP_PORT must be a port number")
		}
		if c.SMTPFrom == "" {
			p = append(p, "TIDINGS_SMTP_FROM is required")
		}
		if c.SMTPCAFile != "" {
			if _, err := c.SMTPRoots(); err != nil {
				p = append(p, err.Error())
			}
		}
		if c.Concurrency <= 0 {
			p = append(p, "TIDINGS_WORKER_CONCURRENCY must be positive")
		}
		if c.WorkerNice < 0 || c.WorkerNice > 19 {
			p = append(p, "TIDINGS_WORKER_NICE must be from 0 (the priority it was started with) to 19 (the lowest)")
		}
		if _, err := c.AuditSigner(); err != nil {
			p = append(p, err.Error())
		}
		if c.AuditCheckpointDir == "" {
			p = append(p, "TIDINGS_AUDIT_CHECKPOINT_DIR is required (a folder outside the database's reach for the signed checkpoints)")
		}
		if c.AuditChainEvery <= 0 || c.AuditCheckpointRows <= 0 || c.AuditCheckpointEvery <= 0 {
			p = append(p, "TIDINGS_AUDIT_CHAIN_EVERY, TIDINGS_AUDIT_CHECKPOINT_ROWS and TIDINGS_AUDIT_CHECKPOINT_EVERY must be positive")
		}
		if c.SMTPPoolSize < 0 {
			p = append(p, "TIDINGS_SMTP_POOL_SIZE must be positive (unset: the worker concurrency)")
		}
		if _, err := c.WebhookSchedule(); err != nil {
			p = append(p, err.Error())
		}
		if c.WebhookEvery <= 0 {
			p = append(p, "TIDINGS_WEBHOOK_EVERY must be positive")
		}
		if _, err := c.DKIMKeySpecs(); err != nil {
			p = append(p, err.Error())
		}
		if _, err := c.MessageSignerSpecs(); err != nil {
			p = append(p, err.Error())
		}
	}
	return p
}

// WebhookSchedule parses TIDINGS_WEBHOOK_RETRIES; nil when unset.
func (c Config) WebhookSchedule() ([]time.Duration, error) {
	if strings.TrimSpace(c.WebhookRetries) == "" {
		return nil, nil
	}
	var out []time.Duration
	for _, f := range strings.Split(c.WebhookRetries, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("TIDINGS_WEBHOOK_RETRIES: want positive durations, comma separated (e.g. 5s,5m,30m)")
		}
		out = append(out, d)
	}
	return out, nil
}

// minMetricsToken is the shortest TIDINGS_METRICS_TOKEN taken: a guessable
// token is no better than none.
const minMetricsToken = 16

// DKIMKeySpec names one DKIM signing key: the tenant whose mail it signs
// ("*": every tenant's, for the service's own domain), the header From
// domain, the DNS selector and the PEM file of the private key.
type DKIMKeySpec struct{ Tenant, Domain, Selector, File string }

// DKIMKeySpecs parses TIDINGS_DKIM_KEYS, e.g.
// "acme:acme.example:s2026:/etc/tidings/dkim-acme.pem,*:notices.example:s1:/etc/tidings/dkim.pem".
func (c Config) DKIMKeySpecs() ([]DKIMKeySpec, error) {
	var out []DKIMKeySpec
	for _, entry := range strings.Split(c.DKIMKeys, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		f := strings.SplitN(entry, ":", 4)
		if len(f) != 4 || f[0] == "" || f[1] == "" || f[2] == "" || f[3] == "" {
			return nil, fmt.Errorf("TIDINGS_DKIM_KEYS: an entry is not tenant:domain:selector:file (%d entries read)", len(out))
		}
		if _, err := os.Stat(f[3]); err != nil {
			return nil, fmt.Errorf("TIDINGS_DKIM_KEYS: key of %s: %w", f[1], err)
		}
		out = append(out, DKIMKeySpec{Tenant: f[0], Domain: f[1], Selector: f[2], File: f[3]})
	}
	return out, nil
}

// Connections is how many connections serve holds open at once:
// TIDINGS_MAX_CONNECTIONS, or else the larger of 1,024 and eight times
// TIDINGS_MAX_IN_FLIGHT.
func (c Config) Connections() int {
	if c.MaxConnections > 0 {
		return c.MaxConnections
	}
	return max(1024, 8*c.MaxInFlight)
}

// SMTPSessions is how many SMTP sessions the email channel may keep open:
// TIDINGS_SMTP_POOL_SIZE, or else one per concurrent task, so that no
// task waits for another's session. A relay that limits connections per
// client wants TIDINGS_SMTP_POOL_SIZE at or below its limit.
func (c Config) SMTPSessions() int {
	if c.SMTPPoolSize > 0 {
		return c.SMTPPoolSize
	}
	return c.Concurrency
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Keyring builds the sealing keyring from the configured keys.
func (c Config) Keyring() (*seal.Keyring, error) {
	var problems []string
	keys, err := seal.ParseKeys(c.SealKeys)
	if c.SealKeys == "" {
		problems = append(problems, "TIDINGS_SEAL_KEYS is required (id:base64 of 32 bytes; `tidings keys new` makes one)")
	} else if err != nil {
		problems = append(problems, "TIDINGS_SEAL_KEYS: "+err.Error())
	}
	var index *seal.IndexKeys
	if c.BlindIndexKey == "" {
		problems = append(problems, "TIDINGS_BLIND_INDEX_KEY is required (base64 of 32 bytes)")
	} else if ix, err := c.indexKeys(); err != nil {
		problems = append(problems, err.Error())
	} else {
		index = ix
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	if c.SealPrimary == "" && len(keys) > 1 {
		ids := make([]string, 0, len(keys))
		for id := range keys {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		return nil, fmt.Errorf("TIDINGS_SEAL_PRIMARY is required when TIDINGS_SEAL_KEYS holds more than one key (%s): name the key that seals", strings.Join(ids, ", "))
	}
	// The keyring's own index key is replaced by the configured versions.
	k, err := seal.NewKeyring(keys, c.SealPrimary, make([]byte, 32))
	if err != nil {
		return nil, fmt.Errorf("TIDINGS_SEAL_PRIMARY: %w", err)
	}
	return k.WithIndexKeys(index), nil
}

// indexKeys reads the blind index key versions, the primary one and the
// tenants moved to another.
func (c Config) indexKeys() (*seal.IndexKeys, error) {
	keys, err := seal.ParseIndexKeys(c.BlindIndexKey)
	if err != nil {
		return nil, errors.New("TIDINGS_BLIND_INDEX_KEY must be base64 of 32 bytes, or version:base64,… (1:…,2:…)")
	}
	tenants := map[string]int{}
	for _, part := range strings.Split(c.BlindIndexTenants, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		t, v, ok := strings.Cut(part, "=")
		n, err := strconv.Atoi(v)
		if !ok || t == "" || err != nil {
			return nil, errors.New("TIDINGS_BLIND_INDEX_TENANTS: want tenant=version,…")
		}
		tenants[t] = n
	}
	ix, err := seal.NewIndexKeys(keys, c.BlindIndexPrimary, tenants)
	if err != nil {
		return nil, fmt.Errorf("TIDINGS_BLIND_INDEX_PRIMARY / TIDINGS_BLIND_INDEX_TENANTS: %w", err)
	}
	return ix, nil
}

// AuditKeyring reads the audit chain's HMAC keys and picks the primary.
func (c Config) AuditKeyring() (*audit.Keys, error) {
	if c.AuditKeys == "" {
		return nil, errors.New("TIDINGS_AUDIT_KEYS is required (id:base64 of 32 bytes; `tidings audit keygen` makes one)")
	}
	k, err := audit.ParseKeys(c.AuditKeys, c.AuditPrimary)
	if err != nil {
		return nil, fmt.Errorf("TIDINGS_AUDIT_KEYS / TIDINGS_AUDIT_PRIMARY: %w", err)
	}
	return k, nil
}

// AuditSigner reads the key that signs audit checkpoints.
func (c Config) AuditSigner() (*audit.Signer, error) {
	if c.AuditSigningKey == "" {
		return nil, errors.New("TIDINGS_AUDIT_SIGNING_KEY is required (id:base64 of a 32-byte Ed25519 seed; `tidings audit keygen` makes one)")
	}
	s, err := audit.ParseSigningKey(c.AuditSigningKey)
	if err != nil {
		return nil, fmt.Errorf("TIDINGS_AUDIT_SIGNING_KEY: %w", err)
	}
	return s, nil
}

// SMTPRoots loads the CA file that the SMTP relay's certificate chains to.
func (c Config) SMTPRoots() (*x509.CertPool, error) {
	if c.SMTPCAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.SMTPCAFile)
	if err != nil {
		return nil, fmt.Errorf("TIDINGS_SMTP_CA_FILE: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("TIDINGS_SMTP_CA_FILE holds no PEM certificate")
	}
	return pool, nil
}

// splitList reads a comma-separated list, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
