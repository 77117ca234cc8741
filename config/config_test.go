package config

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/seal"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestValidateReportsEveryProblemAtOnceWithoutSecrets(t *testing.T) {
	secret := "supersecretpassword-canary"
	c, parse := FromEnv(env(map[string]string{
		"TIDINGS_DATABASE_URL":               "mysql://u:" + secret + "@h/db",
		"TIDINGS_REDIS_ADDR":                 "nope",
		"TIDINGS_SEAL_KEYS":                  "k1:" + secret,
		"TIDINGS_PUBLIC_BASE_URL":            "http://portal.example.org",
		"TIDINGS_SMTP_PORT":                  "x",
		"TIDINGS_WORKER_CONCURRENCY":         "0",
		"TIDINGS_SMTP_POOL_SIZE":             "-1",
		"TIDINGS_DISCLOSURE_RETENTION_YEARS": "5",
		"TIDINGS_WORKER_ADDR":                "9091",
		"TIDINGS_HEALTH_ADDR":                "9092",
		"TIDINGS_METRICS_TOKEN":              "short-" + secret[:4],
		"TIDINGS_MAX_CONNECTIONS":            "200",
		"TIDINGS_WORKER_NICE":                "20",
	}))
	problems := append(parse, c.Validate(RoleServe|RoleWorker)...)
	all := strings.Join(problems, "\n")
	for _, want := range []string{
		"TIDINGS_SMTP_PORT must be an integer",
		"TIDINGS_DATABASE_URL must be a postgres:// URL",
		"TIDINGS_REDIS_ADDR must be host:port",
		"TIDINGS_SEAL_KEYS",
		"TIDINGS_BLIND_INDEX_KEY is required",
		"TIDINGS_PUBLIC_BASE_URL must use https",
		"TIDINGS_SMTP_HOST is required",
		"TIDINGS_SMTP_FROM is required",
		"TIDINGS_WORKER_CONCURRENCY must be positive",
		"TIDINGS_WORKER_NICE must be from 0",
		"TIDINGS_SMTP_POOL_SIZE must be positive",
		"TIDINGS_AUDIT_KEYS is required",
		"TIDINGS_AUDIT_SIGNING_KEY is required",
		"TIDINGS_AUDIT_CHECKPOINT_DIR is required",
		"TIDINGS_DISCLOSURE_RETENTION_YEARS must be at least 6",
		"TIDINGS_WORKER_ADDR must be host:port",
		"TIDINGS_HEALTH_ADDR must be host:port",
		"TIDINGS_METRICS_TOKEN must be at least 16 characters",
		"TIDINGS_MAX_CONNECTIONS must be at least twice TIDINGS_MAX_IN_FLIGHT",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, secret) {
		t.Errorf("a secret was printed:\n%s", all)
	}
}

// validEnv is a configuration every role accepts.
func validEnv() map[string]string {
	return map[string]string{
		"TIDINGS_DATABASE_URL":         "postgres://tidings@127.0.0.1:5432/tidings",
		"TIDINGS_SEAL_KEYS":            "k1:" + seal.NewRandomKey(),
		"TIDINGS_BLIND_INDEX_KEY":      seal.NewRandomKey(),
		"TIDINGS_PUBLIC_BASE_URL":      "https://portal.example.org",
		"TIDINGS_SMTP_HOST":            "smtp.example.org",
		"TIDINGS_SMTP_FROM":            "notices@example.org",
		"TIDINGS_AUDIT_KEYS":           "a1:" + seal.NewRandomKey(),
		"TIDINGS_AUDIT_SIGNING_KEY":    "s1:" + seal.NewRandomKey(),
		"TIDINGS_AUDIT_CHECKPOINT_DIR": "/var/lib/tidings/audit",
	}
}

func TestValidConfigPasses(t *testing.T) {
	c, parse := FromEnv(env(validEnv()))
	if p := append(parse, c.Validate(RoleServe|RoleWorker)...); len(p) > 0 {
		t.Fatalf("unexpected problems: %v", p)
	}
	if _, err := c.Keyring(); err != nil {
		t.Fatal(err)
	}
	if !c.SMTPRequireTLS {
		t.Error("SMTP TLS must be required by default")
	}
	if strings.Contains(c.LogValue().String(), "0123456789abcdef") {
		t.Error("LogValue prints an API token")
	}
	if c.WorkerAddr != "127.0.0.1:9091" || c.MetricsToken != "" {
		t.Errorf("worker address %q, metrics token %q: want the worker's health and metrics on loopback, no token, by default", c.WorkerAddr, c.MetricsToken)
	}
	if c.SMTPPoolSize != 0 || c.SMTPSessions() != c.Concurrency {
		t.Errorf("SMTP pool %d, sessions %d: want one session per concurrent task (%d) by default",
			c.SMTPPoolSize, c.SMTPSessions(), c.Concurrency)
	}
}

func TestMetricsTokenIsNeverPrinted(t *testing.T) {
	e := validEnv()
	e["TIDINGS_METRICS_TOKEN"] = "metrics-token-canary-0123456789"
	c, parse := FromEnv(env(e))
	if p := append(parse, c.Validate(RoleServe|RoleWorker)...); len(p) > 0 {
		t.Fatalf("unexpected problems: %v", p)
	}
	if c.MetricsToken != e["TIDINGS_METRICS_TOKEN"] {
		t.Fatalf("metrics token %q not read", c.MetricsToken)
	}
	if v := c.LogValue().String(); strings.Contains(v, "canary") || !strings.Contains(v, "metrics_token_set=true") {
		t.Errorf("LogValue: %s", v)
	}
}

// The worker gives way to serve by default; 0 keeps the priority it was
// started with, and a value a nice value cannot take is refused.
func TestWorkerNice(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  int
		bad   bool
	}{{"", 10, false}, {"0", 0, false}, {"19", 19, false}, {"-1", -1, true}, {"20", 20, true}} {
		e := validEnv()
		if tc.value != "" {
			e["TIDINGS_WORKER_NICE"] = tc.value
		}
		c, parse := FromEnv(env(e))
		problems := append(parse, c.Validate(RoleWorker)...)
		if c.WorkerNice != tc.want || (len(problems) > 0) != tc.bad {
			t.Errorf("TIDINGS_WORKER_NICE=%q: %d, problems %v; want %d, refused %v", tc.value, c.WorkerNice, problems, tc.want, tc.bad)
		}
	}
}

func TestSMTPPoolSizeOverridesConcurrency(t *testing.T) {
	c, parse := FromEnv(env(map[string]string{
		"TIDINGS_WORKER_CONCURRENCY": "20",
		"TIDINGS_SMTP_POOL_SIZE":     "3",
	}))
	if len(parse) > 0 {
		t.Fatal(parse)
	}
	if c.Concurrency != 20 || c.SMTPSessions() != 3 {
		t.Errorf("concurrency %d, SMTP sessions %d; want 20 and 3", c.Concurrency, c.SMTPSessions())
	}
	if _, parse := FromEnv(env(map[string]string{"TIDINGS_SMTP_POOL_SIZE": "four"})); len(parse) != 1 ||
		parse[0] != "TIDINGS_SMTP_POOL_SIZE must be an integer" {
		t.Errorf("a non-integer pool size: %v", parse)
	}
}

// The worker refuses to start without usable audit keys; with several
// chain keys it must be told which one chains (never guessed), and no key
// is ever printed.
func TestAuditKeys(t *testing.T) {
	k1, k2, sign := seal.NewRandomKey(), seal.NewRandomKey(), seal.NewRandomKey()
	base := validEnv()
	base["TIDINGS_AUDIT_KEYS"] = "a1:" + k1 + ",a2:" + k2
	base["TIDINGS_AUDIT_PRIMARY"] = "a2"
	base["TIDINGS_AUDIT_SIGNING_KEY"] = "s1:" + sign
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range base {
			m[a] = b
		}
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		role Role
		want string // "" for no problem
	}{
		{"two keys, primary named", base, RoleWorker, ""},
		{"two keys, no primary", with("TIDINGS_AUDIT_PRIMARY", ""), RoleWorker, "name the one that chains new rows"},
		{"primary not among the keys", with("TIDINGS_AUDIT_PRIMARY", "a3"), RoleWorker, `primary key "a3" is not among the keys`},
		{"short chain key", with("TIDINGS_AUDIT_KEYS", "a1:c2hvcnQ="), RoleWorker, "TIDINGS_AUDIT_KEYS"},
		{"two signing keys", with("TIDINGS_AUDIT_SIGNING_KEY", "s1:"+sign+",s2:"+k1), RoleWorker, "exactly one signing key"},
		{"no checkpoint dir", with("TIDINGS_AUDIT_CHECKPOINT_DIR", ""), RoleWorker, "TIDINGS_AUDIT_CHECKPOINT_DIR is required"},
		{"serve needs none", with("TIDINGS_AUDIT_KEYS", ""), RoleServe, ""},
		{"verify needs the chain keys", with("TIDINGS_AUDIT_KEYS", ""), RoleAudit, "TIDINGS_AUDIT_KEYS is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, parse := FromEnv(env(tc.env))
			all := strings.Join(append(parse, c.Validate(tc.role)...), "\n")
			if tc.want == "" && all != "" || !strings.Contains(all, tc.want) {
				t.Fatalf("problems %q, want %q", all, tc.want)
			}
			for _, secret := range []string{k1, k2, sign} {
				if strings.Contains(all, secret) {
					t.Fatal("a key was printed")
				}
			}
		})
	}
	c, _ := FromEnv(env(base))
	if k, err := c.AuditKeyring(); err != nil || k.Primary != "a2" {
		t.Fatalf("keyring: %v", err)
	}
	if c.AuditCheckpointRows != 1000 || c.AuditCheckpointEvery != 10*time.Second || c.AuditChainEvery != time.Second {
		t.Fatalf("defaults: %d rows, %v, %v", c.AuditCheckpointRows, c.AuditCheckpointEvery, c.AuditChainEvery)
	}
}

// Tokens in clear in the environment are refused, with the way to make a
// key instead, rather than silently ignored.
func TestAPITokensRefused(t *testing.T) {
	e := validEnv()
	e["TIDINGS_API_TOKENS"] = "acme:0123456789abcdef0123456789"
	_, parse := FromEnv(env(e))
	if len(parse) != 1 || !strings.Contains(parse[0], "tidings keys create") {
		t.Fatalf("problems = %q, want one naming tidings keys create", parse)
	}
}

// The key that seals is named: with k9 and k10 configured, nothing is
// guessed from the ids' order (lexically "k9" > "k10").
func TestSealPrimaryIsExplicit(t *testing.T) {
	e := validEnv()
	e["TIDINGS_SEAL_KEYS"] = "k9:" + seal.NewRandomKey() + ",k10:" + seal.NewRandomKey()
	c, _ := FromEnv(env(e))
	p := strings.Join(c.Validate(RoleServe), "\n")
	if !strings.Contains(p, "TIDINGS_SEAL_PRIMARY is required when TIDINGS_SEAL_KEYS holds more than one key (k10, k9)") {
		t.Errorf("two keys, no primary: problems %q", p)
	}
	e["TIDINGS_SEAL_PRIMARY"] = "k1"
	c, _ = FromEnv(env(e))
	if p := strings.Join(c.Validate(RoleServe), "\n"); !strings.Contains(p, `primary key "k1" is not among the keys (k10, k9)`) {
		t.Errorf("unknown primary: problems %q", p)
	}
	e["TIDINGS_SEAL_PRIMARY"] = "k10"
	c, _ = FromEnv(env(e))
	k, err := c.Keyring()
	if err != nil {
		t.Fatal(err)
	}
	if kid, _ := seal.KeyID(k.Seal([]byte("x"), seal.Place{Table: "t", Column: "c"})); kid != "k10" {
		t.Errorf("sealed with %q, want k10", kid)
	}
}

func TestBlindIndexVersions(t *testing.T) {
	e := validEnv()
	secret := seal.NewRandomKey()
	e["TIDINGS_BLIND_INDEX_KEY"] = "1:" + seal.NewRandomKey() + ",2:" + secret
	c, _ := FromEnv(env(e))
	p := strings.Join(c.Validate(RoleServe), "\n")
	if !strings.Contains(p, "no primary version named") || strings.Contains(p, secret) {
		t.Errorf("two versions, no primary: problems %q", p)
	}
	e["TIDINGS_BLIND_INDEX_PRIMARY"] = "1"
	e["TIDINGS_BLIND_INDEX_TENANTS"] = "acme=2"
	c, _ = FromEnv(env(e))
	k, err := c.Keyring()
	if err != nil {
		t.Fatal(err)
	}
	if a, b := k.BlindIndex("acme", "patient", "Patient/1"), k.BlindIndex("other", "patient", "Patient/1"); seal.IndexVersion(a) != 2 || seal.IndexVersion(b) != 1 {
		t.Errorf("acme indexes as %q, another tenant as %q: want versions 2 and 1", a, b)
	}
	e["TIDINGS_BLIND_INDEX_TENANTS"] = "acme=3"
	c, _ = FromEnv(env(e))
	if _, err := c.Keyring(); err == nil || !strings.Contains(err.Error(), "version 3 is not configured") {
		t.Errorf("a tenant on an unconfigured version: %v", err)
	}
}

// The accounting of disclosures is kept six years unless configured
// longer, by the calendar.
func TestDisclosureRetention(t *testing.T) {
	now := time.Date(2030, 2, 28, 9, 0, 0, 0, time.UTC)
	c, problems := FromEnv(env(validEnv()))
	if len(problems) != 0 || c.DisclosureRetentionYears != 6 || !c.DisclosureCutoff(now).Equal(time.Date(2024, 2, 28, 9, 0, 0, 0, time.UTC)) {
		t.Errorf("default: %d years, cutoff %s, %v", c.DisclosureRetentionYears, c.DisclosureCutoff(now), problems)
	}
	e := validEnv()
	e["TIDINGS_DISCLOSURE_RETENTION_YEARS"] = "10"
	if c, _ := FromEnv(env(e)); c.DisclosureRetentionYears != 10 || len(c.Validate(RoleMigrate)) != 0 {
		t.Errorf("ten years: %d, %v", c.DisclosureRetentionYears, c.Validate(RoleMigrate))
	}
}

func TestDKIMKeySpecs(t *testing.T) {
	pemFile := filepath.Join(t.TempDir(), "k.pem")
	if err := os.WriteFile(pemFile, []byte("not read here"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := validEnv()
	e["TIDINGS_DKIM_KEYS"] = "acme:acme.example:s2026:" + pemFile + ", *:notices.example:s1:" + pemFile
	c, _ := FromEnv(env(e))
	specs, err := c.DKIMKeySpecs()
	if err != nil {
		t.Fatal(err)
	}
	want := []DKIMKeySpec{{"acme", "acme.example", "s2026", pemFile}, {"*", "notices.example", "s1", pemFile}}
	if len(specs) != 2 || specs[0] != want[0] || specs[1] != want[1] {
		t.Fatalf("specs %+v, want %+v", specs, want)
	}
	for bad, problem := range map[string]string{
		"acme:acme.example:" + pemFile:            "not tenant:domain:selector:file",
		"acme:acme.example:s1:/nonexistent/k.pem": "key of acme.example",
	} {
		e["TIDINGS_DKIM_KEYS"] = bad
		c, _ := FromEnv(env(e))
		if p := strings.Join(c.Validate(RoleWorker), "\n"); !strings.Contains(p, problem) {
			t.Errorf("%q: problems %q, want %q", bad, p, problem)
		}
	}
}

// The portal's settings: 30-day links and 15-minute sessions by default;
// serve with a relay needs its From to mail the one-time codes.
func TestPortalSettings(t *testing.T) {
	c, parse := FromEnv(env(validEnv()))
	if len(parse) > 0 || c.PortalTokenTTL != 30*24*time.Hour || c.PortalSessionTTL != 15*time.Minute {
		t.Fatalf("defaults: %v %v %v", c.PortalTokenTTL, c.PortalSessionTTL, parse)
	}
	e := validEnv()
	e["TIDINGS_PORTAL_TOKEN_TTL"], e["TIDINGS_PORTAL_SESSION_TTL"] = "168h", "48h"
	delete(e, "TIDINGS_SMTP_FROM")
	c, _ = FromEnv(env(e))
	p := strings.Join(c.Validate(RoleServe), "\n")
	if c.PortalTokenTTL != 168*time.Hour || !strings.Contains(p, "TIDINGS_PORTAL_SESSION_TTL") || !strings.Contains(p, "TIDINGS_SMTP_FROM is required with TIDINGS_SMTP_HOST") {
		t.Errorf("token TTL %v, problems:\n%s", c.PortalTokenTTL, p)
	}
}

// Without TIDINGS_MAX_CONNECTIONS serve holds at least 1,024 connections,
// and more with a larger in-flight bound; a value given is kept.
func TestConnectionsDefault(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want int
	}{
		{map[string]string{}, 1024},
		{map[string]string{"TIDINGS_MAX_IN_FLIGHT": "512"}, 4096},
		{map[string]string{"TIDINGS_MAX_CONNECTIONS": "300"}, 300},
	} {
		e := validEnv()
		maps.Copy(e, c.env)
		cfg, problems := FromEnv(env(e))
		problems = append(problems, cfg.Validate(RoleServe)...)
		if len(problems) != 0 || cfg.Connections() != c.want {
			t.Errorf("%v: %d connections (%v), want %d", c.env, cfg.Connections(), problems, c.want)
		}
	}
}
