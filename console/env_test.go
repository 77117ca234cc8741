package console

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/policy"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/store"
	"github.com/tidings-health/tidings/testenv"
)

// env is a console on a real store, served over HTTP, with a clock the
// test moves.
type env struct {
	t      *testing.T
	st     *store.Store
	dbURL  string
	routes gin.RoutesInfo
	keys   *access.Service
	srv    *httptest.Server
	logs   *testenv.LogBuffer

	mu  sync.Mutex
	now time.Time
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

// newEnv starts the console for tenants t1 and t2 with every service on a
// real store; configure may change them.
func newEnv(t *testing.T, configure func(*Config, *store.Store)) *env {
	t.Helper()
	ctx := context.Background()
	keys, err := seal.ParseKeys("k1:" + seal.NewRandomKey())
	if err != nil {
		t.Fatal(err)
	}
	kr, err := seal.NewKeyring(keys, "", bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	dbURL := testenv.NewDB(t)
	st, err := store.Open(ctx, dbURL, kr, store.Options{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	for _, id := range []string{"t1", "t2"} {
		if err := st.EnsureTenant(ctx, id, "Tenant "+id); err != nil {
			t.Fatal(err)
		}
	}
	def, err := policy.NewEmbedded(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pol := &policy.Tenants{Default: def, Store: st}
	if err := pol.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, dbURL: dbURL, logs: &testenv.LogBuffer{}, now: time.Now()}
	// The key service reads the real clock: keys expire by it, sessions by the test's.
	e.keys = &access.Service{Store: st}
	cfg := Config{Keys: e.keys, Policy: pol, Subscriptions: st, AuditLog: st, Disclosures: st, Workflows: journey.Workflows{Store: st}, Now: e.clock,
		Log: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if configure != nil {
		configure(&cfg, st)
	}
	gin.SetMode(gin.TestMode)
	r := gin.New()
	New(cfg).Mount(r)
	e.routes = r.Routes()
	e.srv = httptest.NewServer(r)
	t.Cleanup(e.srv.Close)
	return e
}

// key makes an API key and returns its token.
func (e *env) key(tenant string, role access.Role) string {
	e.t.Helper()
	_, token, err := e.keys.Create(context.Background(), tenant, role, "console test", 0, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	return token
}

// browser is a client with cookies that does not follow redirects, and
// remembers the last page's CSRF token as a form would.
type browser struct {
	e    *env
	c    *http.Client
	csrf string
	from string // the client address a proxy names (X-Forwarded-For); "": the connection's
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([A-Za-z0-9_-]+)"`)

type response struct {
	status int
	body   string
	header http.Header
}

func (b *browser) do(req *http.Request) response {
	b.e.t.Helper()
	if b.from != "" {
		// The test's engine trusts every proxy, as gin does by default.
		req.Header.Set("X-Forwarded-For", b.from)
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if m := csrfField.FindSubmatch(body); m != nil {
		b.csrf = string(m[1])
	}
	return response{res.StatusCode, string(body), res.Header}
}

func (b *browser) get(path string) response {
	b.e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.e.srv.URL+path, nil)
	return b.do(req)
}

// post sends form with the remembered CSRF token unless form has one.
func (b *browser) post(path string, form url.Values) response {
	b.e.t.Helper()
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// signIn opens a session with token and fails the test unless it works.
func (b *browser) signIn(token string) {
	b.e.t.Helper()
	b.get("/console/signin")
	if r := b.post("/console/signin", url.Values{"key": {token}}); r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/" {
		b.e.t.Fatalf("sign-in: %d %s", r.status, r.body)
	}
	b.get("/console/")
}

func (b *browser) cookie(name string) *http.Cookie {
	u, _ := url.Parse(b.e.srv.URL + "/console/")
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}
