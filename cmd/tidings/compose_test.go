package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/mailcatch"
	"github.com/tidings-health/tidings/metrics/metricstest"
	"github.com/tidings-health/tidings/testenv"
)

// composeFile is the part of compose.yaml this test reads.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       string            `yaml:"build"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// interpolate does what compose does to the file before reading it:
// ${NAME:-default} becomes $NAME from the environment, or the default,
// and $$ becomes $.
func interpolate(text string) string {
	re := regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}`)
	return re.ReplaceAllStringFunc(text, func(m string) string {
		if m == "$$" {
			return "$"
		}
		g := re.FindStringSubmatch(m)
		if v := os.Getenv(g[1]); v != "" {
			return v
		}
		return g[2]
	})
}

// composeOrder lists the services so that each comes after those it
// depends on, failing on a dependency that is not a service or a cycle.
func composeOrder(t *testing.T, services map[string]composeService) []string {
	t.Helper()
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string)
	visit = func(name string) {
		svc, ok := services[name]
		if !ok {
			t.Fatalf("compose.yaml: a service depends on %q, which is not a service", name)
		}
		switch state[name] {
		case 1:
			t.Fatalf("compose.yaml: the dependencies of %q form a cycle", name)
		case 2:
			return
		}
		state[name] = 1
		deps := make([]string, 0, len(svc.DependsOn))
		for d := range svc.DependsOn {
			deps = append(deps, d)
		}
		slices.Sort(deps)
		for _, d := range deps {
			visit(d)
		}
		state[name] = 2
		order = append(order, name)
	}
	names := make([]string, 0, len(services))
	for n := range services {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		visit(n)
	}
	return order
}

// TestComposePathWithoutDocker runs compose.yaml's services the way
// `docker compose up` would, in its dependency order and with its
// commands, environment and healthchecks, on this machine's servers
// instead of containers (Docker does not run here): the database is a
// testenv PostgreSQL with the role and database the postgres image would
// make, Redis a testenv Redis, the certs step runs its own openssl
// command, Mailpit is an in-process STARTTLS catcher serving the
// certificate that step made, and the services built from this repository
// are this binary's commands. What a container network would resolve
// (postgres:5432, redis:6379, mailpit:1025, /certs, the published ports)
// is mapped to loopback addresses and temporary folders, and nothing else
// in the file is changed. Then it follows the file's own instructions: a
// key made with `docker compose run --rm subscribe keys create`, a
// notification posted where the header comment says, the mail read from
// the catcher, and the worker's metrics read with the compose token.
func TestComposePathWithoutDocker(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := interpolate(string(raw))
	var cf composeFile
	if err := yaml.Unmarshal([]byte(text), &cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	order := composeOrder(t, cf.Services)

	env := testenv.Current()
	if env == nil {
		t.Fatal("no testenv")
	}
	tmp := t.TempDir()
	certDir := filepath.Join(tmp, "certs")
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	serveAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	workerAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	serveHealthAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	redisAddr, redisDB := testenv.NewRedisDB(t)
	dbName := fmt.Sprintf("compose_%d", time.Now().UnixNano())
	pgHost := net.JoinHostPort(env.PG.Host, strconv.Itoa(env.PG.Port))
	var mc *mailcatch.Server
	defer func() {
		if mc != nil {
			mc.Close()
		}
	}()

	// resolve maps what a compose network and its volumes would provide.
	resolve := func(s string) string {
		r := strings.NewReplacer(
			"@postgres:5432/tidings", "@"+pgHost+"/"+dbName,
			"-h postgres", "-h "+env.PG.Host+" -p "+strconv.Itoa(env.PG.Port),
			"-d tidings", "-d "+dbName,
			"redis:6379", redisAddr,
			"DNS:mailpit", "DNS:localhost",
			"/certs/", certDir+"/",
			"/audit-checkpoints", filepath.Join(tmp, "audit-checkpoints"),
			"0.0.0.0:8080", serveAddr,
			"0.0.0.0:9091", workerAddr,
			"127.0.0.1:8080", serveAddr,
			"127.0.0.1:9091", workerAddr,
			"127.0.0.1:9090", serveHealthAddr,
		)
		return r.Replace(s)
	}
	// Every TIDINGS_ or other variable any service sets, so that each step
	// sees only its own.
	allKeys := map[string]bool{}
	for _, svc := range cf.Services {
		for k := range svc.Environment {
			allKeys[k] = true
		}
	}
	useEnv := func(svc composeService) {
		for k := range allKeys {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
		for k, v := range svc.Environment {
			switch {
			case k == "TIDINGS_SMTP_HOST" && v == "mailpit":
				v = "localhost"
			case k == "TIDINGS_SMTP_PORT":
				_, port := splitHostPort(t, mc.Addr())
				v = strconv.Itoa(port)
			default:
				v = resolve(v)
			}
			t.Setenv(k, v)
		}
		// The compose Redis is the server's database 0; this test borrows one.
		t.Setenv("TIDINGS_REDIS_DB", strconv.Itoa(redisDB))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs testenv.LogBuffer
	type running struct {
		name string
		errs chan error
	}
	var daemons []running
	healthy := func(name string, svc composeService, exited <-chan error) {
		t.Helper()
		test := svc.Healthcheck.Test
		if len(test) < 3 || test[0] != "CMD" || test[1] != "/tidings" {
			t.Fatalf("compose.yaml: %s's healthcheck %q is not a tidings command", name, test)
		}
		args := make([]string, len(test)-2)
		for i, a := range test[2:] {
			args[i] = resolve(a)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := realMain(context.Background(), args, io.Discard, io.Discard)
			if err == nil {
				return
			}
			select {
			case err := <-exited:
				t.Fatalf("%s exited before it was healthy: %v; logs:\n%s", name, err, logs.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never became healthy (%v): %v; logs:\n%s", name, args, err, logs.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	for _, name := range order {
		svc := cf.Services[name]
		switch {
		case svc.Build == ".":
			useEnv(svc)
			args := make([]string, len(svc.Command))
			for i, a := range svc.Command {
				args[i] = resolve(a)
			}
			if len(svc.Healthcheck.Test) > 0 {
				r := running{name: name, errs: make(chan error, 1)}
				go func() { r.errs <- realMain(ctx, args, io.Discard, &logs) }()
				daemons = append(daemons, r)
				healthy(name, svc, r.errs)
				continue
			}
			var out bytes.Buffer
			if err := realMain(context.Background(), args, &out, &out); err != nil {
				t.Fatalf("compose service %s (tidings %s): %v\n%s", name, strings.Join(args, " "), err, out.String())
			}
		case strings.HasPrefix(svc.Image, "postgres:") && len(svc.Command) == 0:
			// The image makes POSTGRES_USER a superuser with POSTGRES_PASSWORD
			// and POSTGRES_DB owned by it; this server is shared, so the
			// database gets a name of its own (resolve maps it).
			user, pw := svc.Environment["POSTGRES_USER"], svc.Environment["POSTGRES_PASSWORD"]
			if svc.Environment["POSTGRES_DB"] != "tidings" || user == "" {
				t.Fatalf("compose.yaml: postgres service environment changed: %v", svc.Environment)
			}
			conn, err := pgx.Connect(ctx, env.PG.URL("postgres"))
			if err != nil {
				t.Fatal(err)
			}
			var exists bool
			if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)`, user).Scan(&exists); err != nil {
				t.Fatal(err)
			}
			stmts := []string{}
			if !exists {
				stmts = append(stmts, "CREATE ROLE "+pgx.Identifier{user}.Sanitize()+" LOGIN SUPERUSER PASSWORD '"+strings.ReplaceAll(pw, "'", "''")+"'")
			}
			stmts = append(stmts, "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()+" OWNER "+pgx.Identifier{user}.Sanitize())
			for _, s := range stmts {
				if _, err := conn.Exec(ctx, s); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			conn.Close(ctx)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := env.PG.DropDatabase(ctx, dbName); err != nil {
					t.Errorf("drop %s: %v", dbName, err)
				}
			})
		case strings.HasPrefix(svc.Image, "postgres:"), strings.HasPrefix(svc.Image, "alpine/openssl"):
			// A one-shot shell step (the service role, the certificate):
			// its own script, run here with the same environment.
			if len(svc.Entrypoint) != 2 || svc.Entrypoint[0] != "/bin/sh" || svc.Entrypoint[1] != "-c" || len(svc.Command) != 1 {
				t.Fatalf("compose.yaml: %s is not a /bin/sh -c step", name)
			}
			cmd := exec.CommandContext(ctx, "/bin/sh", "-c", resolve(svc.Command[0]))
			cmd.Env = os.Environ()
			for k, v := range svc.Environment {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("compose service %s: %v\n%s", name, err, out)
			}
		case strings.HasPrefix(svc.Image, "redis:"):
			// testenv's Redis runs with noeviction and appendonly as this
			// service asks; check that the file still asks for them.
			if !slices.Contains(svc.Command, "noeviction") || !slices.Contains(svc.Command, "--appendonly") {
				t.Fatalf("compose.yaml: redis command changed: %v", svc.Command)
			}
		case strings.HasPrefix(svc.Image, "axllent/mailpit"):
			if svc.Environment["MP_SMTP_REQUIRE_STARTTLS"] != "true" {
				t.Fatalf("compose.yaml: mailpit no longer requires STARTTLS: %v", svc.Environment)
			}
			cert, err := tls.LoadX509KeyPair(resolve(svc.Environment["MP_SMTP_TLS_CERT"]), resolve(svc.Environment["MP_SMTP_TLS_KEY"]))
			if err != nil {
				t.Fatalf("mailpit's certificate from the certs step: %v", err)
			}
			mc, err = mailcatch.Start(mailcatch.Options{Dir: filepath.Join(tmp, "mail"), STARTTLS: true, Certificate: &cert})
			if err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("compose.yaml has a service %q (image %q) this test does not know how to run: teach it", name, svc.Image)
		}
	}
	if len(daemons) != 2 {
		t.Fatalf("compose.yaml runs %d long-lived tidings services, want serve and worker", len(daemons))
	}

	// "For the /v1 API, make a key: docker compose run --rm subscribe keys
	// create --tenant local --role admin"
	useEnv(cf.Services["subscribe"])
	tokenFile := filepath.Join(tmp, "key")
	if err := realMain(context.Background(), []string{"keys", "create", "--tenant", "local", "--role", "admin", "--token-file", tokenFile}, io.Discard, io.Discard); err != nil {
		t.Fatalf("keys create: %v", err)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	secret := os.Getenv("TIDINGS_LOCAL_SUBSCRIPTION_SECRET")
	metricsToken := os.Getenv("TIDINGS_METRICS_TOKEN")
	if secret == "" || metricsToken == "" {
		t.Fatal("compose.yaml no longer sets the subscription secret or the metrics token")
	}

	base := "http://" + serveAddr
	do := func(method, path, contentType, auth string, body []byte) int {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Authorization", "Bearer "+auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The pharmacy EOB's patient has no email in the bundle: register one.
	if code := do("PUT", "/v1/contacts/Patient/Patient2", "application/json", strings.TrimSpace(string(tok)), []byte(`{"email":"member@plan.example.org"}`)); code != 200 {
		t.Fatalf("PUT contact with the compose key: %d", code)
	}
	// "POST notifications to http://localhost:8080/fhir/r4/notify/local/local-eob
	// with Authorization: Bearer local-subscription-secret-change-me"
	notifyPath := "/fhir/r4/notify/local/local-eob"
	if !strings.Contains(string(raw), "localhost:8080"+notifyPath) {
		t.Fatalf("compose.yaml's header no longer names %s", notifyPath)
	}
	body, err := fhir.WrapResources(fixture(t, "carin-bb-2.0.0/ExplanationOfBenefit-EOBPharmacy1.json"), base+"/fhir/r4/Subscription/local-eob", "eob", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if code := do("POST", notifyPath, "application/fhir+json", secret, body); code != 202 {
		t.Fatalf("POST %s: %d", notifyPath, code)
	}
	msgs, err := mc.WaitFor(ctxT(t, 30*time.Second), 1)
	if err != nil {
		t.Fatalf("no mail: %v; logs:\n%s", err, logs.String())
	}
	mailText := decodedText(t, msgs[0].Data)
	if !msgs[0].TLS || !strings.Contains(mailText, "http://localhost:8080/portal/") || !strings.Contains(mailText, "$80.00") {
		t.Errorf("message (TLS %v):\n%s", msgs[0].TLS, mailText)
	}
	// "Metrics: … the worker's at http://localhost:9091/metrics, … with
	// Authorization: Bearer local-metrics-token-change-me"
	// The catcher has the mail before the worker hears the relay's reply.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		sent := metricstest.Scrape(t, "http://"+workerAddr+"/metrics", metricsToken).Get(t, "tidings_smtp_sends_total", "result", "sent")
		if sent == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker's metrics count %v mails sent, want 1", sent)
		}
	}

	cancel()
	for _, d := range daemons {
		select {
		case err := <-d.errs:
			if err != nil {
				t.Errorf("%s returned %v", d.name, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not stop", d.name)
		}
	}
}
