package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// Over the bound, a request waits for a slot; when none frees within the
// wait it is answered 429 with Retry-After, as a FHIR OperationOutcome on
// the notification routes; one that frees within the wait serves it.
func TestRequestsInFlightAreBounded(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	hold, held := make(chan struct{}), make(chan struct{})
	r.POST("/fhir/r4/notify/x", newInFlight(1, 300*time.Millisecond).middleware(fhirError), func(c *gin.Context) {
		if c.Query("hold") != "" {
			held <- struct{}{}
			<-hold
		}
		c.Status(http.StatusAccepted)
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	post := func(q string) *http.Response {
		resp, err := http.Post(srv.URL+"/fhir/r4/notify/x"+q, "application/fhir+json", nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	first := make(chan int)
	go func() { resp := post("?hold=1"); resp.Body.Close(); first <- resp.StatusCode }()
	<-held
	resp := post("")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct{ Code string }
	}
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || json.Unmarshal(body, &oo) != nil ||
		oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("over the bound: %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	// A request that arrives while the slot is held gets it when it frees.
	waiter := make(chan int)
	go func() { resp := post(""); resp.Body.Close(); waiter <- resp.StatusCode }()
	time.Sleep(50 * time.Millisecond)
	close(hold)
	if code := <-first; code != http.StatusAccepted {
		t.Fatalf("the request holding the slot: %d", code)
	}
	if code := <-waiter; code != http.StatusAccepted {
		t.Fatalf("the request that waited for the slot: %d", code)
	}
	if resp := post(""); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("after the slot was freed: %d", resp.StatusCode)
	}
}
