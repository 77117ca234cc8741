package api

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/metrics"
)

// HealthConfig wires the worker's health and metrics server.
type HealthConfig struct {
	Checks  []Check          // what /readyz pings
	Metrics *metrics.Metrics // nil: no /metrics
	// MetricsToken, when set, is the bearer token /metrics asks for;
	// empty, /metrics answers clients on loopback only.
	MetricsToken string
	Log          *slog.Logger
	RatePerSec   float64 // per client address; 0: DefaultRatePerSecond
	RateBurst    int
}

// NewHealth builds the worker's HTTP server: /healthz (the process
// answers), /readyz (Postgres and Redis answer) and /metrics, rate-limited
// per client address as serve's are.
func NewHealth(cfg HealthConfig) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	var log *slog.Logger
	cfg.RatePerSec, cfg.RateBurst, log = withDefaults(cfg.RatePerSec, cfg.RateBurst, cfg.Log)
	r := gin.New()
	_ = r.SetTrustedProxies(nil) // nothing proxies the worker: the connection is the client
	r.Use(recovery(log))
	r.NoRoute(func(c *gin.Context) { jsonError(c, fault.New(fault.NotFound, "no such endpoint")) })
	perClient := newLimiters(cfg.RatePerSec, cfg.RateBurst)
	healthRoutes(r, perClient.middleware(func(c *gin.Context) string { return "ip:" + c.ClientIP() }, jsonError),
		cfg.Checks, cfg.Metrics, cfg.MetricsToken, log)
	return r
}

// healthRoutes registers /healthz, /readyz and (with m) /metrics behind
// limit: serve and the worker answer them alike.
func healthRoutes(r gin.IRoutes, limit gin.HandlerFunc, checks []Check, m *metrics.Metrics, token string, log *slog.Logger) {
	r.GET("/healthz", limit, func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", limit, readiness(checks, log))
	if m != nil {
		h := m.Handler()
		r.GET("/metrics", limit, metricsAccess(token), func(c *gin.Context) { h.ServeHTTP(c.Writer, c.Request) })
	}
}

// readyFor is how long one round of readiness checks answers /readyz:
// requests that arrive while a round runs, or this soon after it, share
// its result, so that /readyz, which needs no login, cannot make the
// process ping Postgres and Redis once a request (up to the per-client
// rate, 10,000 a second by default).
const readyFor = 250 * time.Millisecond

// readiness answers 200 when every check passes and 503 naming the ones
// that failed (never their errors, which are logged).
func readiness(checks []Check, log *slog.Logger) gin.HandlerFunc {
	var (
		mu     sync.Mutex
		at     time.Time
		status int
		out    gin.H
	)
	return func(c *gin.Context) {
		mu.Lock()
		if at.IsZero() || time.Since(at) >= readyFor {
			// The round is shared, so a request that gives up does not end it.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 2*time.Second)
			status, out = http.StatusOK, gin.H{}
			for _, ch := range checks {
				if err := ch.Ping(ctx); err != nil {
					status = http.StatusServiceUnavailable
					out[ch.Name] = "unavailable"
					log.Warn("readiness check failed", "check", ch.Name, "err", err)
				} else {
					out[ch.Name] = "ok"
				}
			}
			cancel()
			at = time.Now()
		}
		code, checked := status, out // a round's map is never written again
		mu.Unlock()
		c.JSON(code, gin.H{"checks": checked})
	}
}

// metricsAccess lets a scraper in: with a token, the one that presents it
// (Prometheus sends it as a bearer token); without, a client on loopback
// (a scraper or sidecar on the same host). The exposition holds no PHI,
// but queue depths and error rates are nobody else's business.
func metricsAccess(token string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if token != "" {
			if subtle.ConstantTimeCompare([]byte(bearer(c)), []byte(token)) != 1 {
				jsonError(c, fault.New(fault.Unauthorized, "/metrics needs the metrics token (Authorization: Bearer …)"))
				return
			}
			c.Next()
			return
		}
		if ip := net.ParseIP(c.ClientIP()); ip == nil || !ip.IsLoopback() {
			jsonError(c, fault.New(fault.Forbidden, "/metrics answers loopback clients only; set TIDINGS_METRICS_TOKEN to scrape it from elsewhere"))
			return
		}
		c.Next()
	}
}
