package api

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/intake"
	"github.com/tidings-health/tidings/journey"
)

// Intake receives authenticated notifications; *intake.Service is it.
type Intake interface {
	Authenticate(ctx context.Context, subscriptionID, secret string) (intake.Subscription, error)
	Receive(ctx context.Context, sub intake.Subscription, body []byte) (intake.Result, error)
	ReceiveResource(ctx context.Context, sub intake.Subscription, body []byte, wantType, wantID string) (intake.Result, error)
	VerifySignature(sub intake.Subscription, body []byte, signature, timestamp string) error
}

// Contacts registers patient contacts; delivery.Contacts is it.
type Contacts interface {
	Register(ctx context.Context, tenantID, patientID string, c delivery.Contact) error
}

// Check is one readiness dependency.
type Check struct {
	Name string
	Ping func(ctx context.Context) error
}

// Config wires the server.
type Config struct {
	Intake       Intake
	Contacts     Contacts
	Admin        Admin
	Subscriber   Subscriber
	Policy       PolicyAdmin
	Workflows    WorkflowAdmin // nil: workflow and run routes answer 503
	Journeys     Journeys      // nil: event, segment and enroll routes answer 503
	Checks       []Check
	APITokens    map[string]string // token → tenant
	Log          *slog.Logger
	MaxBodyBytes int64
	RatePerSec   float64
	RateBurst    int
}

// DefaultRatePerSecond is the per-client and per-subscription limit when
// none is configured: above what one deployment takes in (a few thousand
// notifications a second on two cores), so that it stops a flood without
// throttling a health plan's bulk feed.
const DefaultRatePerSecond = 10000

// New builds the Gin engine with every route.
func New(cfg Config) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.RatePerSec <= 0 {
		cfg.RatePerSec, cfg.RateBurst = DefaultRatePerSecond, 2*DefaultRatePerSecond
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	r := gin.New()
	// Rate limits key on the client address: take it from the connection, not
	// from X-Forwarded-For, which any client can set.
	_ = r.SetTrustedProxies(nil)
	r.ContextWithFallback = true
	r.Use(recovery(log), accessLog(log))
	r.NoRoute(func(c *gin.Context) { jsonError(c, fault.New(fault.NotFound, "no such endpoint")) })
	r.HandleMethodNotAllowed = true
	r.NoMethod(func(c *gin.Context) {
		// The one answer outside the error table: it is about the route, not an error of the core.
		c.AbortWithStatusJSON(http.StatusMethodNotAllowed, gin.H{"error": gin.H{"code": "not-supported", "message": "method not allowed"}})
	})

	perClient := newLimiters(cfg.RatePerSec, cfg.RateBurst)
	perSub := newLimiters(cfg.RatePerSec, cfg.RateBurst)
	h := &handlers{cfg: cfg, log: log}

	byIP := func(c *gin.Context) string { return "ip:" + c.ClientIP() }
	r.GET("/healthz", perClient.middleware(byIP, jsonError), func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", perClient.middleware(byIP, jsonError), h.ready)

	f := r.Group("/fhir/r4", perClient.middleware(byIP, fhirError))
	bySub := perSub.middleware(func(c *gin.Context) string { return c.Param("subscription") }, fhirError)
	f.POST("/notify/:subscription", h.authSubscription, bySub, h.notify)
	// Classic R4 rest-hook: HAPI PUTs the changed resource to {endpoint}/{type}/{id}.
	f.PUT("/notify/:subscription/:type/:id", h.authSubscription, bySub, h.notify)
	f.POST("/notify/:subscription/:type/:id", h.authSubscription, bySub, h.notify)

	v1 := r.Group("/v1", perClient.middleware(byIP, jsonError), h.authAPI)
	v1.PUT("/contacts/Patient/:id", h.putContact)
	v1.POST("/sources", h.postSource)
	v1.POST("/subscriptions", h.postSubscription)
	v1.GET("/subscriptions/:id", h.getSubscription)
	v1.GET("/policy", h.getPolicy)
	v1.POST("/policy/evaluate", h.evaluatePolicy)
	v1.POST("/workflows", h.postWorkflow)
	v1.GET("/workflows", h.listWorkflows)
	v1.GET("/workflows/:id", h.getWorkflow)
	v1.PUT("/workflows/:id", h.putWorkflow)
	v1.POST("/workflows/:id/activate", h.setWorkflowStatus(journey.WorkflowActive))
	v1.POST("/workflows/:id/pause", h.setWorkflowStatus(journey.WorkflowPaused))
	v1.POST("/workflows/:id/enroll", h.enrollSegment)
	v1.GET("/workflows/:id/stats", h.workflowStats)
	v1.GET("/runs", h.listRuns)
	v1.POST("/events", h.postEvent)
	v1.POST("/segments/:segment/members", h.postSegmentMember)
	return r
}

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
