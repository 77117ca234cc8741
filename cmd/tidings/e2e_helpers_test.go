package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"encoding/base64"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/api/openapitest"
	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/config"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/mailcatch"
	"github.com/tidings-health/tidings/migrations"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/testenv"
)

// asTidingsEnv makes the test binary be the tidings command (main with its
// arguments), so that `tidings load` can run serve and worker as separate
// processes of os.Executable() in a test.
const asTidingsEnv = "GO_TEST_BINARY_IS_TIDINGS"

func TestMain(m *testing.M) {
	// serve's candidate dry runs start os.Executable() "policy sandbox": in a
	// test that is this binary, which must then be tidings too.
	sandbox := len(os.Args) > 2 && os.Args[1] == "policy" && os.Args[2] == "sandbox"
	if os.Getenv(asTidingsEnv) == "1" || sandbox {
		main()
		os.Exit(0)
	}
	testenv.Main(m, func(ctx context.Context, url string) error { return migrations.Up(ctx, url, nil) })
}

// fixtures are the published examples that package fhir keeps under testdata.
const fixtures = "../../fhir/testdata"

func fixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type testStack struct {
	*stack
	Mail  *mailcatch.Server
	Logs  *testenv.LogBuffer
	DBURL string
}

type testOpts struct {
	NoSTARTTLS     bool // the catcher offers no STARTTLS
	Opportunistic  bool // the SMTP channel does not require TLS
	RedisAddr      string
	RedisDB        int
	RatePerSecond  float64
	RateBurst      int
	NoPlaceholder  bool
	ReconcileEvery time.Duration
	MonitorEvery   time.Duration
	GapSettle      time.Duration
	DeferWorker    bool
	Clock          journey.Clock
	WakeHorizon    time.Duration
	ScheduleEvery  time.Duration
	WakeSlack      time.Duration
	NoWorkflows    bool
	RejectRcpt     func(rcpt string) *mailcatch.Reply // the catcher refuses these recipients
	// HangUpAfterData: the catcher keeps these messages and drops the
	// connection without answering DATA.
	HangUpAfterData func(to []string) bool
	DKIMKeys        string     // TIDINGS_DKIM_KEYS
	SMIMEKeys       string     // TIDINGS_SMIME_KEYS
	OpenPGPKeys     string     // TIDINGS_OPENPGP_KEYS
	WebhookRetries  string     // TIDINGS_WEBHOOK_RETRIES
	DebugLog        bool       // log at debug level
	SMS             config.SMS // the SMS provider (a fake one's URL and credentials)
}

// newTestStack wires the real API and worker to a fresh clone of the migrated
// database, a Redis DB of the test's own and an in-process SMTP server.
func newTestStack(t *testing.T, o testOpts) *testStack {
	t.Helper()
	ctx := context.Background()
	dbURL := testenv.NewDB(t)
	if o.RedisAddr == "" {
		o.RedisAddr, o.RedisDB = testenv.NewRedisDB(t)
	}
	mc, err := mailcatch.Start(mailcatch.Options{Addr: "127.0.0.1:0", Dir: t.TempDir(), STARTTLS: !o.NoSTARTTLS, RejectRcpt: o.RejectRcpt,
		HangUpAfterData: o.HangUpAfterData})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Close() })
	host, port := splitHostPort(t, mc.Addr())
	logs := &testenv.LogBuffer{}
	s := &stack{}
	err = s.wire(ctx, stackInfra{DBURL: dbURL, RedisAddr: o.RedisAddr, RedisDB: o.RedisDB,
		SMTP: notify.SMTPConfig{Host: host, Port: port, RequireTLS: !o.Opportunistic, RootCAs: mc.CertPool(), Timeout: 5 * time.Second}},
		stackOptions{Concurrency: 4, RatePerSecond: o.RatePerSecond, RateBurst: o.RateBurst,
			NoPlaceholder: o.NoPlaceholder, ReconcileEvery: o.ReconcileEvery, DeferWorker: o.DeferWorker,
			MonitorEvery: o.MonitorEvery, GapSettle: o.GapSettle, Clock: o.Clock, WakeHorizon: o.WakeHorizon,
			ScheduleEvery: o.ScheduleEvery, WakeSlack: o.WakeSlack, NoWorkflows: o.NoWorkflows, DKIMKeys: o.DKIMKeys,
			SMIMEKeys: o.SMIMEKeys, OpenPGPKeys: o.OpenPGPKeys,
			WebhookRetries: o.WebhookRetries, DebugLog: o.DebugLog, CheckAPI: checkedAPI(t), SMS: o.SMS}, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return &testStack{stack: s, Mail: mc, Logs: logs, DBURL: dbURL}
}

var apiContract = sync.OnceValues(func() (*openapitest.Contract, error) {
	doc, err := api.OpenAPI()
	if err != nil {
		return nil, err
	}
	return openapitest.New(doc)
})

// checkedAPI wraps a test stack's API so that every answer it gives in the
// test is checked against the OpenAPI document (api/openapi.yaml); a
// violation fails the test when it ends.
func checkedAPI(t *testing.T) func(http.Handler) http.Handler {
	t.Helper()
	c, err := apiContract()
	if err != nil {
		t.Fatal(err)
	}
	return func(h http.Handler) http.Handler { return c.Handler(t, h) }
}

// verifyAudit runs the stack's audit chainer and verifies the dev
// tenant's chain against the database's and the folder's checkpoints. The
// stack's worker chains too, and a pass leaves a tenant another chainer
// holds to it, so it passes and verifies again (for up to 20 s) while rows
// are still waiting to be chained; a report with a problem is returned at
// once.
func (ts *testStack) verifyAudit(t testing.TB) audit.Report {
	t.Helper()
	ctx := context.Background()
	ch, err := ts.app.chainer()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := checkpointPublicKeys(ts.app.cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	v := &audit.Verifier{Store: ts.app.store, Keys: ch.Keys, PublicKeys: pub, CheckpointDir: ts.app.cfg.AuditCheckpointDir}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := ch.Pass(ctx); err != nil {
			t.Fatal(err)
		}
		rep, err := v.Verify(ctx, devTenant)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || (rep.Backlog.Rows == 0 && rep.Rows > 0) || time.Now().After(deadline) {
			return rep
		}
	}
}

func splitHostPort(t testing.TB, addr string) (string, int) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	var port int
	for _, c := range addr[i+1:] {
		port = port*10 + int(c-'0')
	}
	return addr[:i], port
}

// wrap turns a published resource or bundle into a notification bundle.
func (ts *testStack) wrap(t testing.TB, raw []byte) []byte {
	t.Helper()
	b, err := fhir.WrapResources(raw, ts.BaseURL+"/fhir/r4/Subscription/"+devSubscription, "eob", time.Now().UTC())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withPatient2 is a collection Bundle of a Patient (as Patient/Patient2,
// which the CARIN EOB examples name) and an EOB, for ts.wrap.
func withPatient2(patient, eob []byte) []byte {
	return []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"Patient/Patient2","resource":` +
		string(patient) + `},{"resource":` + string(eob) + `}]}`)
}

type postResult struct {
	Status int
	Header http.Header
	Body   []byte
}

func (ts *testStack) post(t testing.TB, body []byte, contentType, secret string) postResult {
	t.Helper()
	return ts.postTo(t, devSubscription, body, contentType, secret, nil)
}

// postTo posts body to a subscription's notify URL with the secret (none
// when "") and any further headers.
func (ts *testStack) postTo(t testing.TB, sub string, body []byte, contentType, secret string, header http.Header) postResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.BaseURL+"/fhir/r4/notify/"+sub, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return postResult{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func (ts *testStack) notify(t testing.TB, body []byte) postResult {
	t.Helper()
	return ts.post(t, body, "application/fhir+json", ts.Secret)
}

// waitNotices waits until n notices exist and none is pending.
func (ts *testStack) waitNotices(t testing.TB, n int64) store.Counts {
	t.Helper()
	return ts.waitTenantNotices(t, devTenant, n)
}

// waitTenantNotices waits until a tenant has n notices and none is pending.
// notifyOneMail posts a published resource as a notification and returns
// the one mail it leads to, once its notice is recorded.
func (ts *testStack) notifyOneMail(t testing.TB, fixturePath string) mailcatch.Message {
	t.Helper()
	if r := ts.notify(t, ts.wrap(t, fixture(t, fixturePath))); r.Status != 202 {
		t.Fatalf("notification: %d %s", r.Status, r.Body)
	}
	ts.waitNotices(t, 1)
	msgs := ts.Mail.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d mails caught, want 1", len(msgs))
	}
	return msgs[0]
}

func (ts *testStack) waitTenantNotices(t testing.TB, tenant string, n int64) store.Counts {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := ts.app.store.CountAll(context.Background(), tenant)
		if err != nil {
			t.Fatal(err)
		}
		if c.Notices >= n && c.ByStatus[delivery.NoticePending] == 0 {
			return c
		}
		if time.Now().After(deadline) {
			if os.Getenv("TIDINGS_TEST_LOGS") != "" {
				t.Log(ts.Logs.String())
			}
			t.Fatalf("timed out waiting for %d final notices: %+v", n, c)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// decodedText is a message's subject and every text part, transfer-decoded,
// so a check for a code cannot be fooled by quoted-printable or base64.
func decodedText(t testing.TB, raw []byte) string {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("unparseable message: %v", err)
	}
	dec := new(mime.WordDecoder)
	subject, _ := dec.DecodeHeader(msg.Header.Get("Subject"))
	var out strings.Builder
	out.WriteString(subject + "\n")
	collectParts(t, msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body, &out)
	return out.String()
}

func collectParts(t testing.TB, ctype, cte string, body io.Reader, out *strings.Builder) {
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		mt = "text/plain"
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err != nil {
				return
			}
			collectParts(t, p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p, out)
		}
	}
	var r io.Reader = body
	switch strings.ToLower(cte) {
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, body)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("undecodable part: %v", err)
	}
	out.Write(b)
	out.WriteString("\n")
}

// codesOf reads, straight from the fixture, every code (and coding display) that
// must never reach a notice: diagnosis, procedure, productOrService (and its NDC / CPT / HCPCS
// codings), revenue, modifiers, DRG and supportingInfo codes.
func codesOf(t testing.TB, eob json.RawMessage) []string {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(eob, &doc); err != nil {
		t.Fatal(err)
	}
	var codes []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if c, ok := x["code"].(string); ok {
				codes = append(codes, c)
			}
			if d, ok := x["display"].(string); ok { // "Prozac, 100 CAPSULE …" is as telling as its NDC
				codes = append(codes, d)
			}
			for _, v := range x {
				walk(v)
			}
		case []any:
			for _, v := range x {
				walk(v)
			}
		}
	}
	for _, key := range []string{"diagnosis", "procedure", "supportingInfo"} {
		walk(doc[key])
	}
	items, _ := doc["item"].([]any)
	for _, it := range items {
		m, _ := it.(map[string]any)
		for _, key := range []string{"productOrService", "revenue", "modifier", "detail"} {
			walk(m[key])
		}
	}
	return codes
}

// apiKey makes an API key for tenant with role, as `tidings keys create`
// does, and returns its token.
func (ts *testStack) apiKey(t *testing.T, tenant string, role access.Role) string {
	t.Helper()
	_, token, err := ts.app.apiKeyService().Create(context.Background(), tenant, role, "test", 0, "test")
	if err != nil {
		t.Fatalf("create %s key for %s: %v", role, tenant, err)
	}
	return token
}

// waitDeliveries waits until at least n of the dev tenant's deliveries have
// the status, and returns their ids.
func (ts *testStack) waitDeliveries(t testing.TB, status string, n int) []int64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ids []int64
		if err := ts.app.store.RawScan(context.Background(), &ids,
			`SELECT id FROM deliveries WHERE tenant_id = ? AND status = ? ORDER BY id`, devTenant, status); err != nil {
			t.Fatal(err)
		}
		if len(ids) >= n {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d %s deliveries (have %d)", n, status, len(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serviceEnv is the least environment serve and worker start with: a new
// database and Redis database, seal and blind-index keys, the portal's URL.
func serviceEnv(t *testing.T) map[string]string {
	t.Helper()
	redisAddr, redisDB := testenv.NewRedisDB(t)
	return map[string]string{
		"TIDINGS_DATABASE_URL":    testenv.NewDB(t),
		"TIDINGS_REDIS_ADDR":      redisAddr,
		"TIDINGS_REDIS_DB":        strconv.Itoa(redisDB),
		"TIDINGS_SEAL_KEYS":       "k1:" + seal.NewRandomKey(),
		"TIDINGS_BLIND_INDEX_KEY": seal.NewRandomKey(),
		"TIDINGS_PUBLIC_BASE_URL": "https://portal.example.org",
	}
}
