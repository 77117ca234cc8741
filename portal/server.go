package portal

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/notify"
	"github.com/tidings-health/tidings/ratelimit"
	"github.com/tidings-health/tidings/seal"
	"github.com/tidings-health/tidings/webpage"
)

//go:embed templates/*.html
var templateFS embed.FS

var pageTemplate = template.Must(template.ParseFS(templateFS, "templates/page.html"))

// Cookie names. Both are scoped to one notice's path.
const (
	sessionCookie = "tidings_portal_session"
	csrfCookie    = "tidings_portal_csrf"
)

// maxFormBytes bounds a posted form: a code, a date and a CSRF token.
const maxFormBytes = 4 << 10

// Config wires the portal.
type Config struct {
	Store  Store
	Events Events
	// Mailer sends the one-time codes; nil: the tenants that ask for a
	// code cannot be served (the page says so).
	Mailer Mailer
	// TokenTTL is how long a notice's link works after the notice was
	// made; default 30 days.
	TokenTTL time.Duration
	// SessionTTL is how long a verified session lasts; default 15 minutes.
	SessionTTL time.Duration
	Limits     Limits
	// SecureCookies marks the cookies Secure (the public URL is https);
	// a request that arrives over TLS gets them Secure anyway.
	SecureCookies bool
	// PerClientPerMinute and PerClientBurst limit each client address's
	// requests (default 30 a minute, burst 20); MissesPerHour limits the
	// links a client may try that lead nowhere (default 20).
	PerClientPerMinute float64
	PerClientBurst     int
	MissesPerHour      float64
	// PerTokenPerMinute limits the requests for one link from anywhere
	// (default 20 a minute, burst 20).
	PerTokenPerMinute float64
	Log               *slog.Logger
	Now               func() time.Time
}

// Server serves /portal/{tenant}/notices/{token}.
type Server struct {
	cfg                       Config
	perClient, misses, tokens *ratelimit.Buckets
}

// New builds the portal from cfg, filling in defaults.
func New(cfg Config) *Server {
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = 30 * 24 * time.Hour
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 15 * time.Minute
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.PerClientPerMinute <= 0 {
		cfg.PerClientPerMinute, cfg.PerClientBurst = 30, 20
	}
	if cfg.PerClientBurst <= 0 {
		cfg.PerClientBurst = 20
	}
	if cfg.MissesPerHour <= 0 {
		cfg.MissesPerHour = 20
	}
	if cfg.PerTokenPerMinute <= 0 {
		cfg.PerTokenPerMinute = 20
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// Buckets are kept for at most this many clients or links at once.
	const maxLimitKeys = 50000
	return &Server{cfg: cfg,
		perClient: ratelimit.New(rate.Limit(cfg.PerClientPerMinute/60), cfg.PerClientBurst, maxLimitKeys),
		misses:    ratelimit.New(rate.Limit(cfg.MissesPerHour/3600), int(cfg.MissesPerHour), maxLimitKeys),
		tokens:    ratelimit.New(rate.Limit(cfg.PerTokenPerMinute/60), int(cfg.PerTokenPerMinute), maxLimitKeys),
	}
}

// Mount adds the portal's routes to r. The access log records them by
// route template, so the token never reaches a log.
func (s *Server) Mount(r gin.IRouter) {
	g := r.Group("/portal/:tenant/notices/:token", s.limitClient)
	g.GET("", s.show)
	g.POST("/code", s.sendCode)
	g.POST("/verify", s.verify)
}

// page is what the template sees.
type page struct {
	Lang, Kind    string
	T             map[string]string
	Error, Info   string
	CSRF          string
	CodeAction    string
	VerifyAction  string
	NeedCode      bool
	NeedBirthDate bool
	NoticeTitle   string
	Fields        []notify.Field
}

// request is one request for a notice that was found and may be shown.
type request struct {
	c    *gin.Context
	n    Notice
	lang string
	path string // the notice's URL path
}

func (s *Server) render(c *gin.Context, status int, p page) {
	if p.T == nil {
		p.T = texts[p.Lang]
	}
	if err := webpage.Write(c, status, pageTemplate, p); err != nil {
		s.cfg.Log.Error("portal page did not render", "kind", p.Kind)
	}
}

// internal logs a failure of ours (the notice id and the error, which
// holds no PHI) and answers 500.
func (s *Server) internal(r request, what string, err error) {
	s.cfg.Log.Error("portal: "+what, "notice_id", r.n.ID, "err", err)
	s.refuse(r.c, http.StatusInternalServerError, r.lang, "error")
}

// refuse answers with a message page in lang.
func (s *Server) refuse(c *gin.Context, status int, lang, key string) {
	s.render(c, status, page{Lang: lang, Kind: "message", Error: texts[lang][key]})
	c.Abort()
}

// pageLanguage is the language the page is written in for tag: the one
// the notices' templates pick, when the page has words in it, else English.
func pageLanguage(tag string) string {
	if l := notify.Language(tag); texts[l] != nil {
		return l
	}
	return "en"
}

// acceptLanguage picks the page language for a request whose notice is
// unknown: the browser's first choice, when the portal has it.
func acceptLanguage(c *gin.Context) string {
	return pageLanguage(c.GetHeader("Accept-Language"))
}

func (s *Server) limitClient(c *gin.Context) {
	if !s.perClient.Allow(c.ClientIP()) {
		s.refuse(c, http.StatusTooManyRequests, acceptLanguage(c), "throttled")
	}
}

// find looks the notice up and refuses what may not be shown: a link of
// the wrong shape, of another tenant or unknown (all three alike, and each
// counted against the client), an expired one, or one asked for too often.
func (s *Server) find(c *gin.Context) (request, bool) {
	lang := acceptLanguage(c)
	tenant := c.Param("tenant")
	token, ok := ParseToken(c.Param("token"))
	var n Notice
	var err error
	if ok {
		n, err = s.cfg.Store.PortalNotice(c.Request.Context(), tenant, token)
	}
	switch {
	case !ok || errors.Is(err, fault.NotFound) || errors.Is(err, fault.Invalid): // Invalid: a tenant the database cannot hold
		status := http.StatusNotFound
		if !s.misses.Allow(c.ClientIP()) {
			status = http.StatusTooManyRequests
		}
		s.refuse(c, status, lang, "notfound")
		return request{}, false
	case err != nil:
		s.cfg.Log.Error("portal: notice lookup failed", "err", err)
		s.refuse(c, http.StatusInternalServerError, lang, "error")
		return request{}, false
	}
	if n.View != nil {
		lang = pageLanguage(n.View.Language)
	}
	if !s.tokens.Allow(tenant + "\x00" + token) {
		s.refuse(c, http.StatusTooManyRequests, lang, "throttled")
		return request{}, false
	}
	if s.cfg.Now().After(n.CreatedAt.Add(s.cfg.TokenTTL)) {
		s.refuse(c, http.StatusGone, lang, "expired")
		return request{}, false
	}
	if n.View == nil || len(n.View.Payload) == 0 {
		// Nothing to show: no need to prove anything (nor to mail a code).
		s.refuse(c, http.StatusNotFound, lang, "noview")
		return request{}, false
	}
	return request{c: c, n: n, lang: lang, path: "/portal/" + url.PathEscape(tenant) + "/notices/" + token}, true
}

// show answers the link: the notice for a verified session, else the
// page that asks the patient to prove who they are.
func (s *Server) show(c *gin.Context) {
	r, ok := s.find(c)
	if !ok {
		return
	}
	if s.hasSession(r) {
		s.showNotice(r)
		return
	}
	s.verifyPage(r, http.StatusOK, "", "")
}

func (s *Server) verifyPage(r request, status int, errKey, infoKey string) {
	method := r.n.Verification
	if needsBirthDate(method) && r.n.View.BirthDate == "" {
		// Nothing to compare a date with: fail closed.
		s.refuse(r.c, http.StatusForbidden, r.lang, "nobirthdate")
		return
	}
	t := texts[r.lang]
	s.render(r.c, status, page{Lang: r.lang, Kind: "verify", T: t, Error: t[errKey], Info: t[infoKey], CSRF: s.csrfToken(r),
		CodeAction: r.path + "/code", VerifyAction: r.path + "/verify", NeedCode: needsCode(method), NeedBirthDate: needsBirthDate(method)})
}

// sendCode mails a new one-time code to the address of record.
func (s *Server) sendCode(c *gin.Context) {
	r, ok := s.find(c)
	if !ok || !s.checkForm(r) {
		return
	}
	if !needsCode(r.n.Verification) {
		s.verifyPage(r, http.StatusBadRequest, "", "")
		return
	}
	if s.cfg.Mailer == nil {
		s.refuse(c, http.StatusServiceUnavailable, r.lang, "unavailable")
		return
	}
	ctx := c.Request.Context()
	code := newCode()
	res, err := s.cfg.Store.IssuePortalCode(ctx, r.n.TenantID, r.n.ID, code, s.cfg.Now(), s.cfg.Limits)
	if err != nil {
		s.internal(r, "storing a code failed", err)
		return
	}
	switch res {
	case Locked:
		s.refuse(c, http.StatusTooManyRequests, r.lang, "locked")
		return
	case TooSoon:
		s.verifyPage(r, http.StatusTooManyRequests, "", "verify.soon")
		return
	}
	if _, err := s.cfg.Mailer.Send(ctx, codeEmail(r.n.TenantID, r.n.View.Email, r.lang, code)); err != nil {
		// The error names a stage and an SMTP reply, never the address.
		s.cfg.Log.Warn("portal: the code mail was not sent", "notice_id", r.n.ID, "err", err)
		s.refuse(c, http.StatusServiceUnavailable, r.lang, "unavailable")
		return
	}
	s.verifyPage(r, http.StatusOK, "", "verify.sent")
}

// codeEmail is the one-time code mail: the code and nothing about the
// patient or the notice.
func codeEmail(tenantID, to, lang, code string) notify.Email {
	t := texts[lang]
	return notify.Email{TenantID: tenantID, To: to, Subject: t["code.subject"], Text: fmt.Sprintf(t["code.body"], code),
		HTML: `<!DOCTYPE html><html lang="` + lang + `"><body><p>` + html.EscapeString(t["code.html"]) + `</p><p style="font-size:1.5em;font-weight:bold">` +
			code + `</p><p>` + html.EscapeString(t["code.note"]) + `</p></body></html>`}
}

// verify judges the code and/or date of birth typed and, when they hold,
// opens a session and sends the browser back to the notice.
func (s *Server) verify(c *gin.Context) {
	r, ok := s.find(c)
	if !ok || !s.checkForm(r) {
		return
	}
	method, now := r.n.Verification, s.cfg.Now()
	if needsBirthDate(method) && r.n.View.BirthDate == "" {
		s.refuse(c, http.StatusForbidden, r.lang, "nobirthdate")
		return
	}
	at := Attempt{NeedCode: needsCode(method), BirthDateOK: true}
	if at.NeedCode {
		at.Code, _ = ParseCode(c.PostForm("code")) // a malformed code is a wrong one
	}
	if needsBirthDate(method) {
		d, ok := ParseBirthDate(c.PostForm("birth_date"), now)
		at.BirthDateOK = ok && subtle.ConstantTimeCompare([]byte(d), []byte(r.n.View.BirthDate)) == 1
	}
	session := seal.NewToken()
	at.Session, at.SessionUntil = hashSession(session), now.Add(s.cfg.SessionTTL)
	res, err := s.cfg.Store.VerifyPortal(c.Request.Context(), r.n.TenantID, r.n.ID, at, now, s.cfg.Limits)
	if err != nil {
		s.internal(r, "verification failed", err)
		return
	}
	switch res {
	case Locked:
		s.refuse(c, http.StatusTooManyRequests, r.lang, "locked")
	case Verified:
		s.setCookie(r, sessionCookie, session, s.cfg.SessionTTL)
		c.Redirect(http.StatusSeeOther, r.path)
	default:
		s.verifyPage(r, http.StatusUnauthorized, "verify.wrong", "")
	}
}

// showNotice shows the notice as the policy allowed it on the portal and
// records the view: an audit row and an entry in the accounting of
// disclosures, and a portal.viewed event (waking the runs that wait for
// it, as a posted one would).
func (s *Server) showNotice(r request) {
	v := r.n.View
	if len(v.Payload) == 0 {
		s.refuse(r.c, http.StatusOK, r.lang, "noview")
		return
	}
	title, fields, err := notify.NoticeFields(v.NoticeType, v.Payload, r.lang)
	if err != nil {
		s.internal(r, "notice did not render", err)
		return
	}
	ctx := context.WithoutCancel(r.c.Request.Context())
	if err := s.cfg.Store.PortalViewed(ctx, r.n.TenantID, r.n.ID, *v); err != nil {
		// No audit row, no disclosure: the notice is not shown.
		s.internal(r, "the view was not audited", err)
		return
	}
	if s.cfg.Events != nil && v.Patient != "" {
		if _, _, err := s.cfg.Events.RecordEvent(ctx, r.n.TenantID, v.Patient, v.Subject, "portal.viewed", nil); err != nil {
			s.cfg.Log.Error("portal: the portal.viewed event was not recorded", "notice_id", r.n.ID, "err", err)
		}
	}
	s.render(r.c, http.StatusOK, page{Lang: r.lang, Kind: "notice", NoticeTitle: title, Fields: fields})
}

func hashSession(v string) string {
	h := sha256.Sum256([]byte(v))
	return hex.EncodeToString(h[:])
}

func (s *Server) hasSession(r request) bool {
	ck, err := r.c.Request.Cookie(sessionCookie)
	if err != nil {
		return false
	}
	if _, ok := ParseToken(ck.Value); !ok {
		return false
	}
	id, err := s.cfg.Store.PortalSession(r.c.Request.Context(), r.n.TenantID, hashSession(ck.Value), s.cfg.Now())
	return err == nil && id == r.n.ID
}

func (s *Server) setCookie(r request, name, value string, ttl time.Duration) {
	http.SetCookie(r.c.Writer, &http.Cookie{Name: name, Value: value, Path: r.path, MaxAge: int(ttl.Seconds()),
		HttpOnly: true, Secure: s.cfg.SecureCookies || r.c.Request.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// csrfToken is the page's form token: the one in the browser's cookie, or
// a new one set now. A form posted from another site carries no cookie
// (SameSite=Strict) and cannot read the token.
func (s *Server) csrfToken(r request) string {
	if ck, err := r.c.Request.Cookie(csrfCookie); err == nil {
		if v, ok := ParseToken(ck.Value); ok {
			return v
		}
	}
	v := seal.NewToken()
	s.setCookie(r, csrfCookie, v, 24*time.Hour)
	return v
}

// checkForm reads the posted form (bounded) and checks its CSRF token
// against the cookie.
func (s *Server) checkForm(r request) bool {
	r.c.Request.Body = http.MaxBytesReader(r.c.Writer, r.c.Request.Body, maxFormBytes)
	ck, err := r.c.Request.Cookie(csrfCookie)
	form := r.c.PostForm("csrf")
	if err != nil || form == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(form)) != 1 {
		s.refuse(r.c, http.StatusForbidden, r.lang, "badform")
		return false
	}
	return true
}
