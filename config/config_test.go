package config

import (
	"strings"
	"testing"

	"github.com/tidings-health/tidings/seal"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestValidateReportsEveryProblemAtOnceWithoutSecrets(t *testing.T) {
	secret := "supersecretpassword-canary"
	c, parse := FromEnv(env(map[string]string{
		"TIDINGS_DATABASE_URL":       "mysql://u:" + secret + "@h/db",
		"TIDINGS_REDIS_ADDR":         "nope",
		"TIDINGS_SEAL_KEYS":          "k1:" + secret,
		"TIDINGS_PUBLIC_BASE_URL":    "http://portal.example.org",
		"TIDINGS_SMTP_PORT":          "x",
		"TIDINGS_WORKER_CONCURRENCY": "0",
		"TIDINGS_SMTP_POOL_SIZE":     "-1",
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
		"TIDINGS_SMTP_POOL_SIZE must be positive",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, secret) {
		t.Errorf("a secret was printed:\n%s", all)
	}
}

func TestValidConfigPasses(t *testing.T) {
	c, parse := FromEnv(env(map[string]string{
		"TIDINGS_DATABASE_URL":    "postgres://tidings@127.0.0.1:5432/tidings",
		"TIDINGS_SEAL_KEYS":       "k1:" + seal.NewRandomKey(),
		"TIDINGS_BLIND_INDEX_KEY": seal.NewRandomKey(),
		"TIDINGS_PUBLIC_BASE_URL": "https://portal.example.org",
		"TIDINGS_SMTP_HOST":       "smtp.example.org",
		"TIDINGS_SMTP_FROM":       "notices@example.org",
		"TIDINGS_API_TOKENS":      "acme:0123456789abcdef0123456789",
	}))
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
	if c.SMTPPoolSize != 0 || c.SMTPSessions() != c.Concurrency {
		t.Errorf("SMTP pool %d, sessions %d: want one session per concurrent task (%d) by default",
			c.SMTPPoolSize, c.SMTPSessions(), c.Concurrency)
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
