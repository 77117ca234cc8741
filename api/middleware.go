package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/metrics"
	"github.com/tidings-health/tidings/ratelimit"
)

var errTooLarge = fault.New(fault.TooLarge, "body exceeds the size limit")

// accessLog logs each request by route template, never by raw path: paths
// can carry patient references.
func accessLog(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if named := c.GetString(ctxRoute); named != "" {
			route = named
		}
		if route == "" {
			route = "unmatched"
		}
		attrs := []any{"method", c.Request.Method, "route", route, "status", c.Writer.Status(),
			"duration_ms", float64(time.Since(start).Microseconds()) / 1000, "bytes_in", c.Request.ContentLength}
		if len(c.Errors) > 0 {
			// Errors recorded with c.Error are internal ones; they hold no PHI by construction.
			attrs = append(attrs, "err", c.Errors.Last().Err)
		}
		level := slog.LevelInfo
		if c.Writer.Status() >= 500 {
			level = slog.LevelError
		}
		log.Log(c.Request.Context(), level, "request", attrs...)
	}
}

// recovery turns a panic into a 500 without details, in the error shape of
// the route (an OperationOutcome on the FHIR routes, the JSON error
// elsewhere); the stack is not logged because values on it may be PHI.
func recovery(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in handler", "route", c.FullPath())
				if !c.Writer.Written() {
					answerError(c, errors.New("panic"))
				}
				c.Abort()
			}
		}()
		c.Next()
	}
}

// limiters are token buckets keyed by client, subscription or API key,
// at most 10,000 keys remembered, with a middleware that refuses a request
// over its key's rate.
type limiters struct{ b *ratelimit.Buckets }

func newLimiters(perSecond float64, burst int) *limiters {
	return &limiters{b: ratelimit.New(rate.Limit(perSecond), burst, 10000)}
}

func (l *limiters) middleware(key func(*gin.Context) string, fail func(*gin.Context, error)) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !l.b.Allow(key(c)) {
			fail(c, fault.New(fault.Throttled, "rate limit exceeded; retry later"))
			return
		}
		c.Next()
	}
}

// inFlight bounds the requests being handled at once. One over the bound
// waits up to wait for a slot, before its body is read, and is then
// answered 429 with Retry-After. Without the bound a process whose cores
// are full holds every request that arrives (an open loop of 1,000
// notifications/s on two busy cores grew serve to 1.9 GB and its p99 to
// 21 s). Answering 429 at once instead made a burst of a few hundred ms a
// retry storm: each sender came back a second later with its body again,
// and at a fixed 1,000/s a quarter of the attempts were refused. The
// waiting requests cost their connections only, which LimitConnections
// bounds.
type inFlight struct {
	slots   chan struct{}
	wait    time.Duration
	metrics *metrics.Metrics // counts the requests that had to wait; nil: none
}

// inFlightWait is how long a request over the bound waits for a slot.
const inFlightWait = time.Second

func newInFlight(n int, wait time.Duration, m *metrics.Metrics) inFlight {
	return inFlight{slots: make(chan struct{}, n), wait: wait, metrics: m}
}

func (f inFlight) middleware(fail func(*gin.Context, error)) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !f.acquire(c.Request.Context()) {
			fail(c, fault.New(fault.Throttled, "too many requests in progress; retry later"))
			return
		}
		defer func() { <-f.slots }()
		c.Next()
	}
}

// acquire takes a slot, waiting up to f.wait. (A client that hangs up
// meanwhile is mostly not noticed: net/http cancels the request's context
// only once its body has been read, and the body is read after the slot.)
func (f inFlight) acquire(ctx context.Context) bool {
	select {
	case f.slots <- struct{}{}:
		return true
	default:
	}
	if f.wait <= 0 {
		f.metrics.SlotWaited(metrics.SlotRefused)
		return false
	}
	t := time.NewTimer(f.wait)
	defer t.Stop()
	select {
	case f.slots <- struct{}{}:
		f.metrics.SlotWaited(metrics.SlotAdmitted)
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	f.metrics.SlotWaited(metrics.SlotRefused)
	return false
}

// bodyHintMax bounds the buffer a request's Content-Length reserves before
// its body has arrived (a client may declare a length and send nothing);
// a larger body grows the buffer as it comes.
const bodyHintMax = 64 << 10

// readAll is io.ReadAll with a buffer sized for the Content-Length the
// client sent (when it sent one), so that a body is read into one
// allocation instead of a growing series of them (a 14 KB notification
// took 14 allocations and 37.8 KB).
func readAll(r io.Reader, contentLength int64) ([]byte, error) {
	if contentLength <= 0 {
		return io.ReadAll(r)
	}
	// One byte more, so that the read that finds the end needs no growth.
	b := make([]byte, 0, min(contentLength, bodyHintMax)+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = slices.Grow(b, len(b))
		}
	}
}

// readBody enforces the body size limit and, for a non-empty body, the
// content type, and returns the body (an empty one is a rest-hook ping).
func readBody(c *gin.Context, maxBytes int64, allowed ...string) ([]byte, error) {
	if c.Request.ContentLength > maxBytes {
		return nil, errTooLarge
	}
	body, err := readAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBytes), c.Request.ContentLength)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errTooLarge
		}
		return nil, fault.New(fault.Invalid, "could not read the request body")
	}
	if len(body) == 0 {
		return body, nil
	}
	ct := c.GetHeader("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	ok := false
	if err == nil {
		for _, a := range allowed {
			if mt == a {
				ok = true
			}
		}
	}
	if !ok {
		return nil, fault.New(fault.UnsupportedMedia, "Content-Type must be one of "+strings.Join(allowed, ", "))
	}
	return body, nil
}
