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
)

// inFlightServer serves one notification route behind an in-flight bound
// of one slot; a request with ?hold=1 signals held and holds the slot until
// free is called (at the latest when the test ends, so that a failed test
// does not leave the server waiting for it).
func inFlightServer(t *testing.T, wait time.Duration) (post func(q string) (int, string, string), held chan struct{}, free func()) {
	t.Helper()
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	held, hold := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free = func() { once.Do(func() { close(hold) }) }
	r.POST("/fhir/r4/notify/x", newInFlight(1, wait).middleware(fhirError), func(c *gin.Context) {
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

// Over the bound, a request waits for a slot; when none frees within the
// wait it is answered 429 with Retry-After, as a FHIR OperationOutcome on
// the notification routes.
func TestRequestsInFlightAreBounded(t *testing.T) {
	post, held, free := inFlightServer(t, 200*time.Millisecond)
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
	free()
	if code := <-first; code != http.StatusAccepted {
		t.Fatalf("the request holding the slot: %d", code)
	}
	if code, _, body := post(""); code != http.StatusAccepted {
		t.Fatalf("after the slot was freed: %d %s", code, body)
	}
}

// A request that arrives while the slot is held waits, unanswered, and is
// served when the slot frees within the wait.
func TestRequestOverTheBoundWaitsForASlot(t *testing.T) {
	post, held, free := inFlightServer(t, time.Minute)
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
}
