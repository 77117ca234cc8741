package api

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"golang.org/x/net/netutil"

	"github.com/tidings-health/tidings/access"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
	"github.com/tidings-health/tidings/metrics"
)

// Intake receives authenticated notifications; *intake.Service is it.
type Intake interface {
	// Authenticate checks a tenant's subscription's secret; tenantID "" is
	// the notify URL without a tenant (see intake.Service.Authenticate).
	Authenticate(ctx context.Context, tenantID, subscriptionID, secret string) (intake.Subscription, error)
	Receive(ctx context.Context, sub intake.Subscription, body []byte) (intake.Result, error)
	ReceiveResource(ctx context.Context, sub intake.Subscription, body []byte, wantType, wantID string) (intake.Result, error)
	VerifySignature(ctx context.Context, sub intake.Subscription, body []byte, signature, timestamp string) error
	ForgetSignature(ctx context.Context, sub intake.Subscription, signature string) error
}

// Contacts registers patient contacts; delivery.Contacts is it.
type Contacts interface {
	Register(ctx context.Context, tenantID, patientID string, c delivery.Contact) error
}

// Keys checks and manages API keys; *access.Service is it.
type Keys interface {
	Authenticate(ctx context.Context, token string) (access.Principal, error)
	Create(ctx context.Context, tenantID string, role access.Role, name string, ttl time.Duration, actor string) (access.Key, string, error)
	List(ctx context.Context, tenantID string) ([]access.Key, error)
	Revoke(ctx context.Context, tenantID, id, actor string) error
}

// Check is one readiness dependency.
type Check struct {
	Name string
	Ping func(ctx context.Context) error
}

// Config wires the server.
type Config struct {
	Intake      Intake
	Contacts    Contacts
	Admin       Admin
	Subscriber  Subscriber
	Policy      PolicyAdmin
	Workflows   WorkflowAdmin // nil: workflow and run routes answer 503
	Journeys    Journeys      // nil: event, segment and enroll routes answer 503
	Disclosures Disclosures   // nil: POST /v1/disclosures/search answers 503
	Checks      []Check
	Keys        Keys             // nil: every /v1 route answers 401
	Webhooks    Webhooks         // nil: webhook routes answer 503
	Metrics     *metrics.Metrics // nil: no /metrics, nothing counted
	// MetricsToken, when set, is the bearer token GET /metrics asks for;
	// empty, /metrics answers clients on loopback only (see metricsAccess).
	MetricsToken string
	Log          *slog.Logger
	MaxBodyBytes int64
	// MaxInFlight bounds the notification and /v1 requests handled at once
	// (more wait up to a second for a slot, then get 429); 0:
	// DefaultMaxInFlight.
	MaxInFlight int
	// RatePerSec and RateBurst limit each client address, each
	// subscription and each API key separately.
	RatePerSec float64
	RateBurst  int
	// TrustedProxies are the addresses or CIDRs of the reverse proxies in
	// front of the server, whose X-Forwarded-For (or X-Real-IP) names the
	// client. Empty: the connection's address is the client, and those
	// headers, which any client can set, are ignored.
	TrustedProxies []string

	// Portal serves /portal/... (the notice pickup page), outside /v1 and
	// without API keys; nil: no portal.
	Portal interface{ Mount(gin.IRouter) }
	// PortalSettings backs /v1/portal/settings; nil: those routes answer 503.
	PortalSettings PortalSettings
	// Bounces backs POST /v1/bounces; nil: it answers 503.
	Bounces Bounces
	// Console serves the web console, all of it under /console (a prefix
	// apart from /v1: it takes no API key header); nil: no console.
	Console interface{ Mount(gin.IRouter) }
	// SMS serves the SMS provider's signed callbacks under /sms; nil: none.
	SMS *SMSCallbacks
	// Links serves the unsubscribe, open and click links of mails (/u/,
	// /t/), outside /v1, under the per-client limits; nil: none.
	Links interface{ Mount(gin.IRouter) }
}

// DefaultRatePerSecond is the per-client, per-subscription and per-key limit when
// none is configured: above what one deployment takes in (a few thousand
// notifications a second on two cores), so that it stops a flood without
// throttling a health plan's bulk feed.
const DefaultRatePerSecond = 10000

// DefaultMaxInFlight is MaxInFlight when none is configured: a few hundred
// milliseconds of work on two cores, at about a millisecond a notification.
const DefaultMaxInFlight = 128

// LimitConnections has ln accept at most n connections open at once (n
// from config.Config.Connections; it must be positive); the ones over it
// wait in the kernel's accept queue, costing serve nothing, until a
// connection closes. Each open
// connection costs serve a goroutine and its buffers, tens of KB, and
// answering 429 does not stop a sender that retries from opening more:
// at a fixed 1,000 notifications/s on two busy cores serve held about
// 10,000 connections and 350 MiB before this bound. Idle keep-alive
// connections count too, until IdleTimeout closes them.
func LimitConnections(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		panic("api: LimitConnections needs a positive bound") // a listener that never accepts
	}
	return netutil.LimitListener(ln, n)
}

// New builds the Gin engine with every route.
func New(cfg Config) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	var log *slog.Logger
	cfg.RatePerSec, cfg.RateBurst, log = withDefaults(cfg.RatePerSec, cfg.RateBurst, cfg.Log)
	r := gin.New()
	// Rate limits key on the client address: take it from the connection, or
	// from X-Forwarded-For only when the connection comes from a trusted
	// proxy (any client can set the header). Proxies are checked by New's
	// caller (config); a bad entry here trusts nobody.
	r.RemoteIPHeaders = []string{"X-Forwarded-For", "X-Real-IP"}
	if err := r.SetTrustedProxies(cfg.TrustedProxies); err != nil {
		log.Error("TrustedProxies refused; trusting no proxy", "err", err)
		_ = r.SetTrustedProxies(nil)
	}
	r.ContextWithFallback = true
	r.Use(recovery(log), accessLog(log))

	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	busy := newInFlight(cfg.MaxInFlight, inFlightWait, cfg.Metrics) // shared: the cores are
	perClient := newLimiters(cfg.RatePerSec, cfg.RateBurst)
	perSub := newLimiters(cfg.RatePerSec, cfg.RateBurst)
	perKey := newLimiters(cfg.RatePerSec, cfg.RateBurst)
	h := &handlers{cfg: cfg, log: log, policyJobs: &tenantJobs{}}

	byIP := func(c *gin.Context) string { return "ip:" + c.ClientIP() }
	// A path or method no route serves is answered too, within the client's
	// rate like every other request; under /fhir, where a FHIR server is the
	// client, with an OperationOutcome, as on the routes.
	r.NoRoute(perClient.middleware(byIP, answerError), func(c *gin.Context) {
		answerError(c, fault.New(fault.NotFound, "no such endpoint"))
	})
	r.HandleMethodNotAllowed = true
	r.NoMethod(perClient.middleware(byIP, answerError), func(c *gin.Context) {
		answerError(c, fault.New(methodNotAllowed, "method not allowed"))
	})
	healthRoutes(r, perClient.middleware(byIP, jsonError), cfg.Checks, cfg.Metrics, cfg.MetricsToken, log)
	openapiRoute(r, perClient.middleware(byIP, jsonError))

	f := r.Group("/fhir/r4", h.countRefused, perClient.middleware(byIP, fhirError), busy.middleware(fhirError))
	// Per subscription, after its secret is checked: ids are per tenant.
	bySub := perSub.middleware(func(c *gin.Context) string {
		sub := c.MustGet(ctxSubscription).(intake.Subscription)
		return sub.TenantID + "|" + sub.ID
	}, fhirError)
	// /notify/{tenant}/{subscription}, and, for classic R4 rest-hook (HAPI
	// PUTs the changed resource to {endpoint}/{type}/{id}),
	// /notify/{tenant}/{subscription}/{type}/{id}. The URLs without the
	// tenant (one and three segments) name a subscription only while one
	// tenant alone has its id. The router wants one wildcard name per
	// position; notifyTarget names the segments.
	for _, rt := range []struct {
		methods    []string
		path       string
		withTenant bool
	}{
		{[]string{http.MethodPost}, "/notify/:s1", false},
		{[]string{http.MethodPost}, "/notify/:s1/:s2", true},
		{[]string{http.MethodPut, http.MethodPost}, "/notify/:s1/:s2/:s3", false},
		{[]string{http.MethodPut, http.MethodPost}, "/notify/:s1/:s2/:s3/:s4", true},
	} {
		for _, m := range rt.methods {
			f.Handle(m, rt.path, notifyTarget(rt.withTenant), h.authSubscription, bySub, h.notify)
		}
	}

	if cfg.Portal != nil {
		cfg.Portal.Mount(r)
	}
	if cfg.Console != nil {
		cfg.Console.Mount(r.Group("", perClient.middleware(byIP, jsonError), busy.middleware(jsonError)))
	}
	if cfg.SMS != nil {
		mountSMS(r, *cfg.SMS, perClient.middleware(byIP, jsonError), busy.middleware(jsonError))
	}
	if cfg.Links != nil {
		cfg.Links.Mount(r.Group("", perClient.middleware(byIP, jsonError), busy.middleware(jsonError)))
	}

	byKey := perKey.middleware(func(c *gin.Context) string { return principal(c).KeyID }, jsonError)
	v1 := r.Group("/v1", perClient.middleware(byIP, jsonError), busy.middleware(jsonError), h.authAPI, byKey)
	for _, rt := range h.routes() {
		v1.Handle(rt.Method, rt.Path, require(rt.Role), holdableParams, rt.handler)
	}
	return r
}

// underFHIR reports whether the request is for the FHIR endpoints.
func underFHIR(c *gin.Context) bool {
	return c.Request.URL.Path == "/fhir" || strings.HasPrefix(c.Request.URL.Path, "/fhir/")
}

// answerError answers err in the shape the path's clients read: an
// OperationOutcome under /fhir, a JSON error elsewhere.
func answerError(c *gin.Context, err error) {
	if underFHIR(c) {
		fhirError(c, err)
		return
	}
	jsonError(c, err)
}

// holdableParams refuses a path segment no id can have: one with a NUL
// byte or invalid UTF-8, which Postgres refuses to compare (it answered 500
// before). Where the path names what the request creates, that is a bad
// request (400); elsewhere the path names nothing (404). A value in a body
// that Postgres refuses is a 400 as well (store gives it fault.Invalid).
func holdableParams(c *gin.Context) {
	for _, p := range c.Params {
		if utf8.ValidString(p.Value) && strings.IndexByte(p.Value, 0) < 0 {
			continue
		}
		if createdByPath[c.FullPath()] {
			jsonError(c, fault.New(fault.Invalid, "the path's "+p.Key+" holds a NUL byte or invalid UTF-8"))
		} else {
			jsonError(c, fault.New(fault.NotFound, "no such "+p.Key+" in this tenant"))
		}
		return
	}
}

// createdByPath are the routes whose path parameter names what the
// request creates or replaces.
var createdByPath = map[string]bool{
	"/v1/contacts/Patient/:id":      true,
	"/v1/segments/:segment/members": true,
}

// withDefaults fills in an unset rate limit and logger.
func withDefaults(perSec float64, burst int, log *slog.Logger) (float64, int, *slog.Logger) {
	if perSec <= 0 {
		perSec, burst = DefaultRatePerSecond, 2*DefaultRatePerSecond
	}
	if log == nil {
		log = slog.Default()
	}
	return perSec, burst, log
}

// Route is one /v1 route and the role it needs.
type Route struct {
	Method, Path string
	Role         access.Role
	handler      gin.HandlerFunc
}

// routes is every /v1 route with its role: the one place that says who may
// do what.
func (h *handlers) routes() []Route {
	return []Route{
		{"PUT", "/contacts/Patient/:id", access.Contacts, h.putContact},
		{"POST", "/bounces", access.Integration, h.postBounce},
		{"POST", "/sources", access.Integration, h.postSource},
		{"POST", "/subscriptions", access.Integration, h.postSubscription},
		{"GET", "/subscriptions/:id", access.Integration, h.getSubscription},
		{"GET", "/policy", access.Compliance, h.getPolicy},
		{"PUT", "/policy", access.Compliance, h.putPolicy},
		{"DELETE", "/policy", access.Compliance, h.deletePolicy},
		{"POST", "/policy/evaluate", access.Compliance, h.evaluatePolicy},
		{"POST", "/disclosures/search", access.Compliance, h.searchDisclosures},
		{"GET", "/disclosures", access.Compliance, h.refuseDisclosureGET},
		{"POST", "/workflows", access.Operator, h.postWorkflow},
		{"GET", "/workflows", access.Operator, h.listWorkflows},
		{"GET", "/workflows/:id", access.Operator, h.getWorkflow},
		{"PUT", "/workflows/:id", access.Operator, h.putWorkflow},
		{"POST", "/workflows/:id/activate", access.Operator, h.setWorkflowStatus(journey.WorkflowActive)},
		{"POST", "/workflows/:id/pause", access.Operator, h.setWorkflowStatus(journey.WorkflowPaused)},
		{"POST", "/workflows/:id/enroll", access.Operator, h.enrollSegment},
		{"GET", "/workflows/:id/stats", access.Operator, h.workflowStats},
		{"GET", "/runs", access.Operator, h.listRuns},
		{"POST", "/events", access.Operator, h.postEvent},
		{"POST", "/segments/:segment/members", access.Operator, h.postSegmentMember},
		{"POST", "/webhooks", access.Integration, h.postWebhook},
		{"GET", "/webhooks", access.Integration, h.listWebhooks},
		{"DELETE", "/webhooks/:id", access.Integration, h.deleteWebhook},
		{"GET", "/webhook-messages", access.Integration, h.listWebhookMessages},
		{"POST", "/webhook-messages/:id/replay", access.Integration, h.replayWebhookMessage},
		{"POST", "/keys", access.Admin, h.postKey},
		{"GET", "/keys", access.Admin, h.listKeys},
		{"GET", "/portal/settings", access.Admin, h.getPortalSettings},
		{"PUT", "/portal/settings", access.Admin, h.putPortalSettings},
		{"DELETE", "/keys/:id", access.Admin, h.revokeKey},
	}
}

// Routes lists the /v1 routes and their roles, for documentation and tests.
func Routes() []Route { return (&handlers{}).routes() }

// Serve runs the HTTP server on ln until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, ln net.Listener, handler http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 120 * time.Second, MaxHeaderBytes: 32 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log.Info("http server stopping")
	return srv.Shutdown(sctx)
}

func bearer(c *gin.Context) string {
	h := c.GetHeader("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}
