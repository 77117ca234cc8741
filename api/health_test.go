package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidings-health/tidings/metrics"
)

func TestMetricsAccess(t *testing.T) {
	m := metrics.New()
	for _, c := range []struct {
		name, token, remote, bearer, forwarded string
		trusted                                []string
		want                                   int
	}{
		{name: "loopback, no token configured", remote: "127.0.0.1:5555", want: 200},
		{name: "IPv6 loopback", remote: "[::1]:5555", want: 200},
		{name: "another host, no token configured", remote: "10.1.2.3:5555", want: 403},
		{name: "through a trusted proxy on loopback, for another host", remote: "127.0.0.1:5555",
			forwarded: "203.0.113.9", trusted: []string{"127.0.0.1"}, want: 403},
		{name: "a forged X-Forwarded-For from an untrusted host", remote: "10.1.2.3:5555", forwarded: "127.0.0.1", want: 403},
		{name: "token configured, presented", token: "s3cret", remote: "10.1.2.3:5555", bearer: "s3cret", want: 200},
		{name: "token configured, wrong", token: "s3cret", remote: "10.1.2.3:5555", bearer: "s3cre", want: 401},
		{name: "token configured, none presented on loopback", token: "s3cret", remote: "127.0.0.1:5555", want: 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := checked(t, New(Config{Metrics: m, MetricsToken: c.token, TrustedProxies: c.trusted}))
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			req.RemoteAddr = c.remote
			if c.bearer != "" {
				req.Header.Set("Authorization", "Bearer "+c.bearer)
			}
			if c.forwarded != "" {
				req.Header.Set("X-Forwarded-For", c.forwarded)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Fatalf("GET /metrics: %d %s, want %d", rec.Code, rec.Body, c.want)
			}
			if c.want == 200 && !strings.Contains(rec.Body.String(), "tidings_notifications_received_total") {
				t.Fatalf("the exposition lacks the notification counter:\n%s", rec.Body)
			}
		})
	}
}

// /readyz needs no login: requests at once, or soon after a round of
// checks, share its result rather than ping Postgres and Redis each.
func TestReadinessChecksAreShared(t *testing.T) {
	var pings atomic.Int32
	h := NewHealth(HealthConfig{Checks: []Check{{Name: "postgres", Ping: func(context.Context) error {
		pings.Add(1)
		time.Sleep(20 * time.Millisecond)
		return nil
	}}}})
	get := func() int {
		req := httptest.NewRequest(http.MethodGet, "/readyz", nil)
		req.RemoteAddr = "192.0.2.1:5555"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if code := get(); code != http.StatusOK {
				t.Errorf("GET /readyz: %d", code)
			}
		})
	}
	wg.Wait()
	if n := pings.Load(); n < 1 || n > 2 {
		t.Fatalf("50 requests at once pinged %d times, want 1 (2 if the round's window passed meanwhile)", n)
	}
	time.Sleep(readyFor)
	before := pings.Load()
	get()
	if pings.Load() != before+1 {
		t.Fatalf("a request after the window did not check again")
	}
}

func TestHealthServer(t *testing.T) {
	down := errors.New("connection refused")
	var redisErr error
	raw := NewHealth(HealthConfig{Metrics: metrics.New(), Checks: []Check{
		{Name: "postgres", Ping: func(context.Context) error { return nil }},
		{Name: "redis", Ping: func(context.Context) error { return redisErr }},
	}})
	// The worker answers /healthz, /readyz and /metrics as serve does, so
	// serve's document describes them (not the API it lacks: see /v1/keys).
	h := checked(t, raw)
	get := func(path string) (int, string) {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "127.0.0.1:5555"
		rec := httptest.NewRecorder()
		if strings.HasPrefix(path, "/v1/") {
			raw.ServeHTTP(rec, req)
		} else {
			h.ServeHTTP(rec, req)
		}
		return rec.Code, rec.Body.String()
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, body := get(path); code != 200 {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	redisErr = down
	time.Sleep(readyFor) // the last round's answer stands until then
	code, body := get("/readyz")
	if code != 503 || !strings.Contains(body, `"redis":"unavailable"`) || !strings.Contains(body, `"postgres":"ok"`) {
		t.Errorf("GET /readyz with Redis down: %d %s", code, body)
	}
	if strings.Contains(body, down.Error()) {
		t.Errorf("/readyz shows the check's error: %s", body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("GET /healthz with Redis down: %d; the process is alive", code)
	}
	if code, _ := get("/v1/keys"); code != 404 {
		t.Errorf("the health server answers /v1/keys: %d", code)
	}
}
