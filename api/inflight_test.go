package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tidings-health/tidings/metrics"
	"github.com/tidings-health/tidings/metrics/metricstest"
)

// inFlightServer serves one notification route behind an in-flight bound
// of one slot; a request with ?hold=1 signals held and holds the slot until
// free is called (at the latest when the test ends, so that a failed test
// does not leave the server waiting for it).
func inFlightServer(t *testing.T, wait time.Duration, m *metrics.Metrics) (post func(q string) (int, string, string), held chan struct{}, free func()) {
	t.Helper()
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	held, hold := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free = func() { once.Do(func() { close(hold) }) }
	r.POST("/fhir/r4/notify/x", newInFlight(1, wait, m).middleware(fhirError), func(c *gin.Context) {
		if c.Query("hold") != "" {
			held <- struct{}{}
			<-hold
		}
		c.Status(http.StatusAccepted)
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	t.Cleanup(free) // runs before srv.Close
	// post answers the status, Retry-After and body; -1 when no answer came.
	post = func(q string) (int, string, string) {
		resp, err := http.Post(srv.URL+"/fhir/r4/notify/x"+q, "application/fhir+json", nil)
		if err != nil {
			return -1, "", err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After"), string(body)
	}
	return post, held, free
}

// slotWaits reads tidings_http_slot_waits_total for an outcome.
func slotWaits(t *testing.T, m *metrics.Metrics, outcome string) float64 {
	t.Helper()
	return metricstest.Of(t, m).Get(t, "tidings_http_slot_waits_total", "outcome", outcome)
}

// Over the bound, a request waits for a slot; when none frees within the
// wait it is answered 429 with Retry-After, as a FHIR OperationOutcome on
// the notification routes, and counted as a refused wait.
func TestRequestsInFlightAreBounded(t *testing.T) {
	m := metrics.New()
	post, held, free := inFlightServer(t, 200*time.Millisecond, m)
	first := make(chan int)
	go func() { code, _, _ := post("?hold=1"); first <- code }()
	<-held
	code, retry, body := post("")
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct{ Code string }
	}
	if code != http.StatusTooManyRequests || retry == "" || json.Unmarshal([]byte(body), &oo) != nil ||
		oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("over the bound: %d, Retry-After %q, %s", code, retry, body)
	}
	if got := slotWaits(t, m, "refused"); got != 1 {
		t.Errorf("refused waits counted %v, want 1", got)
	}
	free()
	if code := <-first; code != http.StatusAccepted {
		t.Fatalf("the request holding the slot: %d", code)
	}
	if code, _, body := post(""); code != http.StatusAccepted {
		t.Fatalf("after the slot was freed: %d %s", code, body)
	}
	// A request that found a slot free did not wait.
	if a, r := slotWaits(t, m, "admitted"), slotWaits(t, m, "refused"); a != 0 || r != 1 {
		t.Errorf("waits counted: admitted %v, refused %v; want 0 and 1", a, r)
	}
}

// A request that arrives while the slot is held waits, unanswered, and is
// served when the slot frees within the wait, counted as an admitted wait.
func TestRequestOverTheBoundWaitsForASlot(t *testing.T) {
	m := metrics.New()
	post, held, free := inFlightServer(t, time.Minute, m)
	first := make(chan int)
	go func() { code, _, _ := post("?hold=1"); first <- code }()
	<-held
	waiter := make(chan int)
	go func() { code, _, _ := post(""); waiter <- code }()
	select {
	case code := <-waiter:
		t.Fatalf("answered %d while the slot was held, want it to wait", code)
	case <-time.After(300 * time.Millisecond):
	}
	free()
	if code := <-first; code != http.StatusAccepted {
		t.Fatalf("the request holding the slot: %d", code)
	}
	if code := <-waiter; code != http.StatusAccepted {
		t.Fatalf("the request that waited for the slot: %d", code)
	}
	if a, r := slotWaits(t, m, "admitted"), slotWaits(t, m, "refused"); a != 1 || r != 0 {
		t.Errorf("waits counted: admitted %v, refused %v; want 1 and 0", a, r)
	}
}
