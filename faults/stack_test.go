package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/mailcatch"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/testenv"
)

// tidingsBin is the binary under test, built once by TestMain.
var tidingsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tidings-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tidingsBin = filepath.Join(dir, "tidings")
	build := exec.Command("go", "build", "-o", tidingsBin, "github.com/tidings-health/tidings/cmd/tidings")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tidings:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	tenant       = "plan"
	subscription = "plan-eob"
	patientRef   = "Patient/fault-patient"
	patientEmail = "fault-patient@example.org"
)

// stack is Tidings as deployed, on this machine.
type stack struct {
	t       *testing.T
	dir     string
	env     []string
	base    string
	secret  string
	token   string // a contacts API key
	pg      *testenv.Postgres
	redis   *testenv.Redis
	mail    *mailcatch.Server
	serve   *testenv.Process
	worker  *testenv.Process
	workers int // worker processes started, for their log names
	eob     []byte
	db      *pgx.Conn
}

func newStack(t *testing.T) *stack {
	t.Helper()
	ctx := context.Background()
	s := &stack{t: t, dir: t.TempDir()}
	var err error
	if s.pg, err = testenv.StartPostgresWith(ctx, "", testenv.PostgresOptions{Durable: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.pg.Stop() })
	if err := s.pg.CreateDatabase(ctx, "tidings", ""); err != nil {
		t.Fatal(err)
	}
	// No persistence: a restart loses every queued task, as a lost Redis would.
	if s.redis, err = testenv.StartRedis(ctx, "", testenv.RedisOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.redis.Close() })
	if s.mail, err = mailcatch.Start(mailcatch.Options{STARTTLS: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.mail.Close() })
	caFile := filepath.Join(s.dir, "relay-ca.pem")
	if err := os.WriteFile(caFile, s.mail.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	s.base = "http://" + listen
	mailHost, mailPort, _ := net.SplitHostPort(s.mail.Addr())
	s.secret = seal.NewToken()
	vars := map[string]string{
		"TIDINGS_DATABASE_URL":         s.pg.URL("tidings"),
		"TIDINGS_REDIS_ADDR":           s.redis.Addr,
		"TIDINGS_SEAL_KEYS":            "f1:" + seal.NewRandomKey(),
		"TIDINGS_BLIND_INDEX_KEY":      seal.NewRandomKey(),
		"TIDINGS_PUBLIC_BASE_URL":      s.base,
		"TIDINGS_LISTEN_ADDR":          listen,
		"TIDINGS_WORKER_ADDR":          "127.0.0.1:0", // each worker its own port: the default 9091 clashes with other test runs
		"TIDINGS_SMTP_HOST":            mailHost,
		"TIDINGS_SMTP_PORT":            mailPort,
		"TIDINGS_SMTP_FROM":            "Plan <notices@plan.example.org>",
		"TIDINGS_SMTP_CA_FILE":         caFile,
		"TIDINGS_AUDIT_KEYS":           "a1:" + seal.NewRandomKey(),
		"TIDINGS_AUDIT_SIGNING_KEY":    "s1:" + seal.NewRandomKey(),
		"TIDINGS_AUDIT_CHECKPOINT_DIR": filepath.Join(s.dir, "audit"),
		// Faults are found and repaired in seconds, not minutes.
		"TIDINGS_CLAIM_LEASE":     "3s",
		"TIDINGS_PENDING_GRACE":   "5s",
		"TIDINGS_RECONCILE_EVERY": "500ms",
		"TIDINGS_SCHEDULE_EVERY":  "500ms",
		"FAULT_SECRET":            s.secret,
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TIDINGS_") {
			s.env = append(s.env, kv)
		}
	}
	for k, v := range vars {
		s.env = append(s.env, k+"="+v)
	}
	tokenFile := filepath.Join(s.dir, "api-key")
	for _, args := range [][]string{
		{"migrate", "up"},
		{"subscription", "add", "--id", subscription, "--tenant", tenant, "--secret-env", "FAULT_SECRET"},
		{"workflow", "install", "--tenant", tenant, "--builtins"},
		{"keys", "create", "--tenant", tenant, "--role", "contacts", "--token-file", tokenFile},
	} {
		s.run(args...)
	}
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	s.token = strings.TrimSpace(string(token))
	if s.db, err = pgx.Connect(ctx, s.pg.URL("tidings")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.db.Close(context.Background()) })
	if s.eob, err = os.ReadFile("testdata/ExplanationOfBenefit-EOBPharmacy1.json"); err != nil {
		t.Fatal(err)
	}

	s.startServe()
	s.startWorker()
	s.putContact()
	return s
}

// run runs one tidings command to completion.
func (s *stack) run(args ...string) {
	s.t.Helper()
	cmd := exec.Command(tidingsBin, args...)
	cmd.Env = s.env
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("tidings %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (s *stack) startServe() {
	s.t.Helper()
	p, err := testenv.StartProcess(tidingsBin, []string{"serve"}, s.env, s.dir, filepath.Join(s.dir, "serve.log"))
	if err != nil {
		s.t.Fatal(err)
	}
	s.serve = p
	s.t.Cleanup(func() { p.Stop(10 * time.Second) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("serve not ready:\n%s", s.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *stack) startWorker() {
	s.t.Helper()
	s.workers++
	p, err := testenv.StartProcess(tidingsBin, []string{"worker"}, s.env, s.dir, filepath.Join(s.dir, fmt.Sprintf("worker-%02d.log", s.workers)))
	if err != nil {
		s.t.Fatal(err)
	}
	s.worker = p
	s.t.Cleanup(func() { p.Stop(10 * time.Second) })
}

// logs is the tail of every process's log, for a failure message.
func (s *stack) logs() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(s.dir, "*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", filepath.Base(f), strings.Join(lines, "\n"))
	}
	return b.String()
}

func (s *stack) putContact() {
	s.t.Helper()
	req, _ := http.NewRequest("PUT", s.base+"/v1/contacts/"+patientRef, strings.NewReader(`{"email":"`+patientEmail+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		s.t.Fatalf("PUT contact: %d", resp.StatusCode)
	}
}

// notification is the published pharmacy EOB as EOB fault-<i> of the test
// patient, in a Subscriptions Backport notification.
func (s *stack) notification(i int) []byte {
	s.t.Helper()
	var res map[string]any
	if err := json.Unmarshal(s.eob, &res); err != nil {
		s.t.Fatal(err)
	}
	res["id"] = fmt.Sprintf("fault-%d", i)
	res["patient"] = map[string]any{"reference": patientRef}
	raw, err := json.Marshal(res)
	if err != nil {
		s.t.Fatal(err)
	}
	body, err := fhir.WrapResources(raw, s.base+"/fhir/r4/Subscription/"+subscription, "http://hl7.org/fhir/us/carin-bb/SubscriptionTopic/eob", time.Now().UTC())
	if err != nil {
		s.t.Fatal(err)
	}
	return body
}

// postAll sends notifications 0 … n-1 from clients connections and returns
// each one's status (0: no answer).
func (s *stack) postAll(n, clients int, bodies func(i int) []byte) []int {
	s.t.Helper()
	statuses := make([]int, n)
	next := make(chan int)
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				statuses[i] = s.post(client, bodies(i))
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return statuses
}

// paced makes bodies come no faster than perSecond, from the first call.
func (s *stack) paced(perSecond float64, bodies func(i int) []byte) func(i int) []byte {
	start := time.Now()
	return func(i int) []byte {
		time.Sleep(time.Until(start.Add(time.Duration(float64(i) / perSecond * float64(time.Second)))))
		return bodies(i)
	}
}

// post sends one notification, retrying a 429 as a FHIR server would.
func (s *stack) post(client *http.Client, body []byte) int {
	for try := 0; ; try++ {
		req, _ := http.NewRequest("POST", s.base+"/fhir/r4/notify/"+subscription, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Authorization", "Bearer "+s.secret)
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || try > 20 {
			return resp.StatusCode
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// outcome is what became of one EOB notification.
type outcome struct {
	stored   bool   // an event row exists
	notice   string // the notice's status, "" for none
	delivery string // the email delivery's status, "" for none
	token    string // the notice's portal token
	msgID    string // the delivery's Message-ID
	mails    int    // mails captured that carry the notice's portal link
}

var portalLink = regexp.MustCompile(`/portal/[^/\s]+/notices/([A-Za-z0-9_-]+)`)

// outcomes reads, for EOBs fault-0 … fault-(n-1), what Postgres and the mail
// catcher hold.
func (s *stack) outcomes(n int) []outcome {
	s.t.Helper()
	out := make([]outcome, n)
	rows, err := s.db.Query(context.Background(), `
		SELECT e.resource_id, coalesce(nt.status, ''), coalesce(nt.portal_token, ''), coalesce(d.status, ''), coalesce(d.message_id, '')
		FROM events e
		LEFT JOIN notices nt ON nt.event_id = e.id
		LEFT JOIN deliveries d ON d.notice_id = nt.id AND d.channel = 'email'
		WHERE e.subscription_id = $1`, subscription)
	if err != nil {
		s.t.Fatal(err)
	}
	byToken := map[string]int{}
	for rows.Next() {
		var id, notice, token, delivery, msgID string
		if err := rows.Scan(&id, &notice, &token, &delivery, &msgID); err != nil {
			s.t.Fatal(err)
		}
		var i int
		if _, err := fmt.Sscanf(id, "fault-%d", &i); err != nil || i < 0 || i >= n {
			s.t.Fatalf("unexpected event for %q", id)
		}
		out[i] = outcome{stored: true, notice: notice, delivery: delivery, token: token, msgID: msgID}
		if token != "" {
			byToken[token] = i
		}
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	for _, m := range s.mail.Messages() {
		// Quoted-printable may fold the link; undo soft line breaks first.
		text := strings.ReplaceAll(string(m.Data), "=\r\n", "")
		seen := map[string]bool{}
		for _, match := range portalLink.FindAllStringSubmatch(text, -1) {
			seen[match[1]] = true
		}
		for tok := range seen {
			if i, ok := byToken[tok]; ok {
				out[i].mails++
			}
		}
	}
	return out
}

// settle waits until every event has a notice, no delivery is sending, and
// no notice is pending but those whose delivery's outcome is unknown (they
// wait for an operator).
func (s *stack) settle(timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var pending, sending, unclaimed int
		err := s.db.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM notices n WHERE status = 'pending' AND NOT EXISTS
				(SELECT 1 FROM deliveries d WHERE d.notice_id = n.id AND d.status = 'unknown')),
			(SELECT count(*) FROM deliveries WHERE status = 'sending'),
			(SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM notices n WHERE n.event_id = e.id))`).Scan(&pending, &sending, &unclaimed)
		if err == nil && pending == 0 && sending == 0 && unclaimed == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("not settled after %v: %d notices pending, %d deliveries sending, %d events without a notice (%v)\n%s", timeout, pending, sending, unclaimed, err, s.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// reconnect replaces the test's own database connection after a restart.
func (s *stack) reconnect() {
	s.t.Helper()
	_ = s.db.Close(context.Background())
	var err error
	if s.db, err = pgx.Connect(context.Background(), s.pg.URL("tidings")); err != nil {
		s.t.Fatal(err)
	}
}
