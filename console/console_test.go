package console

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/store"
)

// Signing in: the form needs its CSRF token, a wrong key is refused, and a
// good one opens a session whose cookie is HttpOnly, SameSite=Strict,
// scoped to /console and holds no part of the key. The home page lists the
// pages of the key's role only; signing out ends the session.
func TestSignInOut(t *testing.T) {
	e := newEnv(t, nil)
	compliance := e.key("t1", access.Compliance)
	b := e.browser()
	if r := b.get("/console/"); r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/signin" {
		t.Fatalf("signed out, /console/ answers %d %s", r.status, r.header.Get("Location"))
	}
	r := b.get("/console/signin")
	if r.status != http.StatusOK || !strings.Contains(r.body, `name="key"`) || b.csrf == "" {
		t.Fatalf("sign-in page: %d %s", r.status, r.body)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy", "Cache-Control"} {
		if r.header.Get(h) == "" {
			t.Errorf("the sign-in page has no %s header", h)
		}
	}
	if r := b.post("/console/signin", url.Values{"key": {compliance}, "csrf": {"forged"}}); r.status != http.StatusForbidden {
		t.Errorf("a forged CSRF token: %d", r.status)
	}
	wrong := compliance[:len(compliance)-4] + "AAAA"
	if r := b.post("/console/signin", url.Values{"key": {wrong}}); r.status != http.StatusUnauthorized || b.cookie(sessionCookie) != nil {
		t.Errorf("a wrong key: %d, session cookie %v", r.status, b.cookie(sessionCookie))
	}
	r = b.post("/console/signin", url.Values{"key": {compliance}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("the right key: %d %s", r.status, r.body)
	}
	var set *http.Cookie
	for _, line := range r.header.Values("Set-Cookie") {
		if c, err := http.ParseSetCookie(line); err == nil && c.Name == sessionCookie {
			set = c
		}
	}
	_, secret, _ := strings.Cut(compliance[4:], "_")
	if set == nil || !set.HttpOnly || set.SameSite != http.SameSiteStrictMode || set.Path != "/console" || set.Secure ||
		strings.Contains(set.Value, secret) || strings.Contains(set.Value, compliance[4:20]) || set.MaxAge <= 0 {
		t.Errorf("session cookie %+v", set)
	}
	home := b.get("/console/")
	if home.status != http.StatusOK || !strings.Contains(home.body, `href="/console/policy"`) || !strings.Contains(home.body, "role <b>compliance</b>") {
		t.Errorf("compliance's home: %d %s", home.status, home.body)
	}
	if strings.Contains(e.logs.String(), secret) {
		t.Errorf("the key reached the log")
	}
	if r := b.post("/console/signout", url.Values{}); r.status != http.StatusSeeOther {
		t.Errorf("sign-out: %d", r.status)
	}
	if r := b.get("/console/"); r.status != http.StatusSeeOther {
		t.Errorf("after signing out, /console/ answers %d", r.status)
	}
	// The old cookie is dead on the server too, not only in this browser.
	b2 := e.browser()
	u, _ := url.Parse(e.srv.URL + "/console/")
	b2.c.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: set.Value, Path: "/console"}})
	if r := b2.get("/console/"); r.status != http.StatusSeeOther {
		t.Errorf("the signed-out cookie still opens the console: %d", r.status)
	}
}

// Sign-in attempts are limited per client: one client that spends its
// attempts (it can forge the CSRF pair, which only has to match) leaves
// another's sign-in working. A shared limit alone let one client lock
// everyone out.
func TestSignInLimitIsPerClient(t *testing.T) {
	e := newEnv(t, nil)
	operator := e.key("t1", access.Operator)
	flood := e.browser()
	flood.from = "198.51.100.7"
	flood.get("/console/signin")
	refused := 0
	for range 60 {
		if r := flood.post("/console/signin", url.Values{"key": {"tdk_not_a_key"}}); r.status == http.StatusTooManyRequests {
			refused++
		} else if r.status != http.StatusUnauthorized {
			t.Fatalf("a wrong key: %d", r.status)
		}
	}
	if refused < 45 {
		t.Fatalf("one client's 60 attempts at once: %d refused, want all after its burst of 10", refused)
	}
	other := e.browser()
	other.from = "203.0.113.9"
	other.signIn(operator)
	if r := flood.post("/console/signin", url.Values{"key": {operator}}); r.status != http.StatusTooManyRequests {
		t.Errorf("the flooding client, right key: %d, want 429 until its bucket refills", r.status)
	}
}

// Each page takes the role of the /v1 route that serves the same data: a
// role that may not see it gets 403 and does not find it on its home page;
// admin sees everything. A posted form without the session's CSRF token is
// refused.
func TestPagesFollowTheAPIRoles(t *testing.T) {
	e := newEnv(t, nil)
	roles := map[access.Role]*browser{}
	for _, role := range access.Roles {
		roles[role] = e.browser()
		roles[role].signIn(e.key("t1", role))
	}
	for _, p := range pages {
		for role, b := range roles {
			r := b.get("/console" + p.Path)
			home := b.get("/console/")
			may := role == access.Admin || role == p.role()
			if may && (r.status != http.StatusOK || !strings.Contains(home.body, `href="/console`+p.Path+`"`)) {
				t.Errorf("%s on %s: %d, listed at home: %v", role, p.Path, r.status, strings.Contains(home.body, p.Path))
			}
			if !may && (r.status != http.StatusForbidden || strings.Contains(home.body, `href="/console`+p.Path+`"`)) {
				t.Errorf("%s on %s: %d (want 403), listed at home: %v", role, p.Path, r.status, strings.Contains(home.body, p.Path))
			}
		}
	}
	if got := (page{APIRoute: "POST /policy/evaluate"}).role(); got != access.Compliance {
		t.Errorf("the playground's role is %s", got)
	}
	b := roles[access.Compliance]
	b.get("/console/policy")
	if r := b.post("/console/policy", url.Values{"csrf": {"x"}, "action": {"diff"}, "policy": {"-- a.rego --\npackage a\n"}}); r.status != http.StatusForbidden {
		t.Errorf("a form with a wrong CSRF token: %d", r.status)
	}
}

// A session ends when its time is up, and soon after its key is revoked.
func TestSessionEnds(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	b.signIn(e.key("t1", access.Admin))
	e.advance(31 * time.Minute)
	if r := b.get("/console/"); r.status != http.StatusSeeOther {
		t.Errorf("after 31 minutes: %d", r.status)
	}
	token := e.key("t1", access.Compliance)
	b.signIn(token)
	keys, _ := e.keys.List(t.Context(), "t1")
	for _, k := range keys {
		if strings.Contains(token, k.ID) {
			if err := e.keys.Revoke(t.Context(), "t1", k.ID, "test"); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.advance(access.CacheTTL)
	if r := b.get("/console/policy"); r.status != http.StatusUnauthorized {
		t.Errorf("with its key revoked: %d", r.status)
	}
	if r := b.get("/console/"); r.status != http.StatusSeeOther {
		t.Errorf("the revoked key's session still opens the console: %d", r.status)
	}
}

// Every console route but sign-in, sign-out and home is a page's, behind
// its role check: a role with no page (contacts) gets 403 from each, and
// every route is under /console.
func TestEveryRouteHasARole(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	b.signIn(e.key("t1", access.Contacts))
	open := map[string]bool{"GET /console": true, "GET /console/signin": true, "POST /console/signin": true,
		"POST /console/signout": true, "GET /console/": true}
	guarded := 0
	for _, rt := range e.routes {
		if !strings.HasPrefix(rt.Path, "/console") {
			t.Errorf("%s %s is outside /console", rt.Method, rt.Path)
		}
		if open[rt.Method+" "+rt.Path] {
			continue
		}
		guarded++
		path := strings.ReplaceAll(rt.Path, ":id", "x")
		var r response
		if rt.Method == http.MethodGet {
			r = b.get(path)
		} else {
			r = b.post(path, url.Values{})
		}
		if r.status != http.StatusForbidden {
			t.Errorf("contacts: %s %s answers %d", rt.Method, rt.Path, r.status)
		}
	}
	if guarded < len(pages) {
		t.Errorf("%d guarded routes for %d pages", guarded, len(pages))
	}
}

// With an https public URL the session cookie is Secure.
func TestSecureCookie(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *store.Store) { c.SecureCookies = true })
	b := e.browser()
	b.get("/console/signin")
	r := b.post("/console/signin", url.Values{"key": {e.key("t1", access.Operator)}})
	var set *http.Cookie
	for _, line := range r.header.Values("Set-Cookie") {
		if c, err := http.ParseSetCookie(line); err == nil && c.Name == sessionCookie {
			set = c
		}
	}
	if r.status != http.StatusSeeOther || set == nil || !set.Secure || !set.HttpOnly {
		t.Errorf("sign-in %d, session cookie %+v", r.status, set)
	}
}
