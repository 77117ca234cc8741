package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/audit"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/ratelimit"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/webpage"
)

//go:embed templates/*.html
var templateFS embed.FS

// Prefix is where the console is mounted.
const Prefix = "/console"

// Cookie names, scoped to Prefix.
const (
	sessionCookie = "tidings_console_session"
	csrfCookie    = "tidings_console_csrf" // the sign-in form's, before a session exists
)

// Form size limits: a policy with its tests is tens of kilobytes; the
// other forms hold a few fields.
const (
	maxPolicyForm = 2 << 20
	maxSmallForm  = 16 << 10
)

// Keys checks API keys; *access.Service is it.
type Keys interface {
	Authenticate(ctx context.Context, token string) (access.Principal, error)
	List(ctx context.Context, tenantID string) ([]access.Key, error)
}

// Config wires the console. A nil service leaves its page answering 503.
type Config struct {
	Keys          Keys
	Policy        Policy
	Subscriptions Subscriptions
	AuditLog      AuditLog
	// Chain verifies a tenant's audit chain; nil when this process has no
	// audit keys (the audit page says so).
	Chain       ChainVerifier
	Disclosures api.Disclosures
	Workflows   api.WorkflowAdmin
	// SessionTTL is how long a sign-in lasts; default 30 minutes.
	SessionTTL time.Duration
	// SecureCookies marks the cookies Secure (the public URL is https); a
	// request that arrives over TLS gets them Secure anyway.
	SecureCookies bool
	Log           *slog.Logger
	Now           func() time.Time
}

// Server serves the console.
type Server struct {
	cfg      Config
	pages    []page // what the navigation offers, each to the roles that may see it
	sessions *sessions
	signIns  *rate.Limiter      // sign-in attempts, all clients together
	clientIn *ratelimit.Buckets // sign-in attempts, per client address
	policyMu sync.Mutex
	busy     map[string]bool // tenants with a playground job running
}

// New builds the console from cfg, filling in defaults.
func New(cfg Config) *Server {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 30 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// Keys are 256 random bits, so the limits are against load, not
	// guessing. Each client gets one attempt a second (a burst of 10), so
	// that no one client can spend the attempts of all (a shared limit alone
	// let one client at six posts a second lock everyone out); together
	// they get 20 a second, which bounds the work of checking keys.
	return &Server{cfg: cfg, pages: pages, sessions: &sessions{m: map[string]*session{}},
		signIns: rate.NewLimiter(20, 100), clientIn: ratelimit.New(1, 10, 10000), busy: map[string]bool{}}
}

// Mount adds the console's routes to r as one group under /console, apart
// from the /v1 API (no API key header, no JSON): documentation and route
// checks that cover the API leave this prefix out.
func (s *Server) Mount(r gin.IRouter) {
	g := r.Group(Prefix)
	g.GET("", func(c *gin.Context) { c.Redirect(http.StatusSeeOther, Prefix+"/") })
	g.GET("/signin", s.signInPage)
	g.POST("/signin", s.signIn)
	g.POST("/signout", s.signedIn, s.signOut)
	g.GET("/", s.signedIn, s.home)
	for _, p := range pages {
		p.mount(g.Group("", s.signedIn, allow(s, p.role())), s)
	}
}

// page is one console page: its path, the API route whose role it takes,
// and its handlers.
type page struct {
	Path, Title, About string
	// APIRoute is "METHOD /path" of the /v1 route that serves the same data:
	// the page takes its role.
	APIRoute string
	// mount adds the page's routes to g, which lets only a signed-in
	// principal of the page's role through.
	mount func(g gin.IRoutes, s *Server)
}

// role is the role the page needs, as the API declares it for APIRoute.
func (p page) role() access.Role { return apiRole(p.APIRoute) }

// apiRole is the role of a /v1 route ("METHOD /path"). A route the API
// does not have is a programming error: no role lets anyone in.
func apiRole(route string) access.Role {
	for _, r := range api.Routes() {
		if r.Method+" "+r.Path == route {
			return r.Role
		}
	}
	panic("console: no /v1 route " + route)
}

// view is what every template sees.
type view struct {
	Title     string
	Principal access.Principal
	Nav       []page
	Current   string
	CSRF      string
	Error     string
	Info      string
	Data      any
}

var funcs = template.FuncMap{
	"fmtTime": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		case *time.Time:
			if v == nil || v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		}
		return ""
	},
	"short": short,
	"pct":   func(f float64) string { return fmt.Sprintf("%.1f%%", f*100) },
}

// templates are the pages' templates by name, each with the layout.
var templates = map[string]*template.Template{}

func init() {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	for _, file := range names {
		name := strings.TrimSuffix(path.Base(file), ".html")
		if name != "layout" {
			templates[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", file))
		}
	}
}

// render writes a page with the headers every console answer carries.
func (s *Server) render(c *gin.Context, status int, name string, v view) {
	if err := webpage.Write(c, status, templates[name], v, "img-src 'self'"); err != nil {
		s.cfg.Log.Error("console page did not render", "page", name, "err", err)
	}
}

// fail answers with a message page: err's client message for a fault, a
// generic one otherwise (logged without PHI: errors hold none).
func (s *Server) fail(c *gin.Context, err error) {
	status := statusOf(err)
	if status >= 500 {
		s.cfg.Log.Error("console request failed", "route", c.FullPath(), "err", err)
	}
	v := s.baseView(c, "Error")
	v.Error = fault.MessageOf(err)
	s.render(c, status, "message", v)
	c.Abort()
}

// statusOf maps an error's code to the status the API gives it.
func statusOf(err error) int { return api.StatusOf(err) }

// baseView fills in who is signed in and the navigation for their role.
func (s *Server) baseView(c *gin.Context, title string) view {
	v := view{Title: title}
	if ss, ok := c.Get(ctxSession); ok {
		se := ss.(*session)
		v.Principal, v.CSRF = se.principal, se.csrf
		for _, p := range s.pages {
			if se.principal.May(p.role()) {
				v.Nav = append(v.Nav, p)
			}
		}
	}
	return v
}

const ctxSession = "tidings.console.session"

// session is one sign-in: the key's principal, never the key.
type session struct {
	principal access.Principal
	csrf      string
	until     time.Time
	checked   time.Time // when the key was last found usable
}

// sessions are the open sign-ins by the hash of their cookie. They live in
// this process: behind a load balancer, a console user needs sticky
// sessions (or signs in again).
type sessions struct {
	mu sync.Mutex
	m  map[string]*session
}

const maxSessions = 10000

func hashToken(v string) string {
	h := sha256.Sum256([]byte(v))
	return hex.EncodeToString(h[:])
}

func (ss *sessions) add(token string, se *session, now time.Time) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.m) >= maxSessions {
		for k, v := range ss.m {
			if now.After(v.until) {
				delete(ss.m, k)
			}
		}
		if len(ss.m) >= maxSessions {
			ss.m = map[string]*session{} // everyone signs in again rather than grow without bound
		}
	}
	ss.m[hashToken(token)] = se
}

func (ss *sessions) get(token string, now time.Time) (*session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	k := hashToken(token)
	se, ok := ss.m[k]
	if ok && now.After(se.until) {
		delete(ss.m, k)
		return nil, false
	}
	return se, ok
}

func (ss *sessions) remove(token string) {
	ss.mu.Lock()
	delete(ss.m, hashToken(token))
	ss.mu.Unlock()
}

func (s *Server) setCookie(c *gin.Context, name, value string, maxAge int) {
	http.SetCookie(c.Writer, &http.Cookie{Name: name, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, Secure: s.cfg.SecureCookies || c.Request.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// signedIn finds the request's session, sends a browser without one to
// the sign-in page, and checks on the way that the key still works (a
// revoked or expired key ends its sessions within access.CacheTTL).
func (s *Server) signedIn(c *gin.Context) {
	ck, err := c.Request.Cookie(sessionCookie)
	now := s.cfg.Now()
	var se *session
	ok := false
	if err == nil {
		se, ok = s.sessions.get(ck.Value, now)
	}
	if !ok {
		if c.Request.Method == http.MethodGet {
			c.Redirect(http.StatusSeeOther, Prefix+"/signin")
			c.Abort()
			return
		}
		s.fail(c, fault.New(fault.Unauthorized, "your console session has ended; sign in again"))
		return
	}
	if now.Sub(se.checked) >= access.CacheTTL {
		usable, err := s.keyUsable(c.Request.Context(), se.principal, now)
		if err != nil {
			s.fail(c, err)
			return
		}
		if !usable {
			s.sessions.remove(ck.Value)
			s.setCookie(c, sessionCookie, "", -1)
			s.fail(c, fault.New(fault.Unauthorized, "the API key of this session was revoked or expired; sign in with another"))
			return
		}
		se.checked = now
	}
	c.Set(ctxSession, se)
	c.Request = c.Request.WithContext(audit.WithActor(c.Request.Context(), se.principal.Actor()))
	if c.Request.Method == http.MethodPost && !s.formOK(c, se.csrf) {
		return
	}
	c.Next()
}

// keyUsable reports whether the session's key is still listed for its
// tenant, neither revoked nor expired.
func (s *Server) keyUsable(ctx context.Context, p access.Principal, now time.Time) (bool, error) {
	keys, err := s.cfg.Keys.List(ctx, p.TenantID)
	if err != nil {
		return false, err
	}
	for _, k := range keys {
		if k.ID == p.KeyID {
			return k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt)), nil
		}
	}
	return false, nil
}

// formOK bounds and parses a posted form and checks its CSRF token
// against want; it answers 403 itself when the token is wrong.
func (s *Server) formOK(c *gin.Context, want string) bool {
	limit := int64(maxSmallForm)
	if strings.HasPrefix(c.FullPath(), Prefix+"/policy") {
		limit = maxPolicyForm
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
	if err := c.Request.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(c, fault.New(fault.TooLarge, "the form is larger than the console takes"))
		} else {
			s.fail(c, fault.New(fault.Invalid, "the form could not be read"))
		}
		return false
	}
	got := c.Request.PostForm.Get("csrf")
	if want == "" || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		s.fail(c, fault.New(fault.Forbidden, "the form is stale or came from another site; reload the page and try again"))
		return false
	}
	return true
}

// allow lets a signed-in principal whose role may use the page through,
// and answers 403 to the others.
func allow(s *Server, role access.Role) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !principal(c).May(role) {
			s.fail(c, fault.Errorf(fault.Forbidden, "this page needs an API key with role %s (or admin)", role))
			return
		}
		c.Next()
	}
}

func principal(c *gin.Context) access.Principal {
	return c.MustGet(ctxSession).(*session).principal
}

func (s *Server) signInPage(c *gin.Context) {
	if ck, err := c.Request.Cookie(sessionCookie); err == nil {
		if _, ok := s.sessions.get(ck.Value, s.cfg.Now()); ok {
			c.Redirect(http.StatusSeeOther, Prefix+"/")
			return
		}
	}
	s.signInForm(c, http.StatusOK, "")
}

func (s *Server) signInForm(c *gin.Context, status int, msg string) {
	v := s.baseView(c, "Sign in")
	v.CSRF = s.signInToken(c)
	v.Error = msg
	s.render(c, status, "signin", v)
}

// signInToken is the sign-in form's CSRF token: the browser's cookie, or
// a new one set now.
func (s *Server) signInToken(c *gin.Context) string {
	if ck, err := c.Request.Cookie(csrfCookie); err == nil && len(ck.Value) == len(seal.NewToken()) {
		return ck.Value
	}
	v := seal.NewToken()
	s.setCookie(c, csrfCookie, v, 3600)
	return v
}

// signIn checks the posted API key and opens a session; the key goes no
// further than Keys.Authenticate.
func (s *Server) signIn(c *gin.Context) {
	want := ""
	if ck, err := c.Request.Cookie(csrfCookie); err == nil {
		want = ck.Value
	}
	if !s.formOK(c, want) {
		return
	}
	if !s.clientIn.Allow(c.ClientIP()) || !s.signIns.Allow() {
		s.signInForm(c, http.StatusTooManyRequests, "Too many sign-ins; try again in a moment.")
		return
	}
	if s.cfg.Keys == nil {
		s.fail(c, fault.New(fault.Unavailable, "API keys are not available in this process"))
		return
	}
	p, err := s.cfg.Keys.Authenticate(c.Request.Context(), strings.TrimSpace(c.Request.PostForm.Get("key")))
	if err != nil {
		if errors.Is(err, fault.Unauthorized) {
			s.signInForm(c, http.StatusUnauthorized, "That API key is not valid (unknown, revoked or expired).")
			return
		}
		s.fail(c, err)
		return
	}
	now := s.cfg.Now()
	token := seal.NewToken()
	s.sessions.add(token, &session{principal: p, csrf: seal.NewToken(), until: now.Add(s.cfg.SessionTTL), checked: now}, now)
	s.setCookie(c, sessionCookie, token, int(s.cfg.SessionTTL.Seconds()))
	s.cfg.Log.Info("console sign-in", "key_id", p.KeyID, "tenant", p.TenantID, "role", string(p.Role))
	c.Redirect(http.StatusSeeOther, Prefix+"/")
}

func (s *Server) signOut(c *gin.Context) {
	if ck, err := c.Request.Cookie(sessionCookie); err == nil {
		s.sessions.remove(ck.Value)
	}
	s.setCookie(c, sessionCookie, "", -1)
	c.Redirect(http.StatusSeeOther, Prefix+"/signin")
}

func (s *Server) home(c *gin.Context) {
	s.render(c, http.StatusOK, "home", s.baseView(c, "Console"))
}
