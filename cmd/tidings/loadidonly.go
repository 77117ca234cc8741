package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/intake"
)

// inProcessNote is the first line of an in-process mode's report.
const inProcessNote = "in-process: the API and the worker run inside this command, not as separate processes"

// runIDOnlyLoad posts N id-only notifications with the worker stopped, then
// starts the worker and times the drain: each event makes the worker read
// the EOB from a FHIR server on loopback (inside this command, serving
// copies of the template with new ids). It runs in-process and says so.
func runIDOnlyLoad(ctx context.Context, n, conc, workers int, tmpl string, stall time.Duration, stdout, stderr io.Writer) error {
	raw, err := os.ReadFile(tmpl)
	if err != nil {
		return err
	}
	// The worker starts after intake so each figure measures one side alone.
	s, err := startStack(ctx, stackOptions{Concurrency: workers, Progress: stderr, DeferWorker: true})
	if err != nil {
		return err
	}
	defer s.Close()

	fmt.Fprintf(stderr, "preparing %d id-only notifications …\n", n)
	served := map[string][]byte{}
	for i := range n {
		var res map[string]any
		if err := json.Unmarshal(raw, &res); err != nil {
			return fmt.Errorf("%s: %w", tmpl, err)
		}
		id := fmt.Sprintf("load-%d", i)
		res["id"] = id
		res["meta"] = map[string]any{"versionId": "1"}
		served["ExplanationOfBenefit/"+id], _ = json.Marshal(res)
	}
	base, stop, err := serveLoadFHIR(served)
	if err != nil {
		return err
	}
	defer stop()
	if err := s.app.store.CreateSource(ctx, intake.Source{ID: "load-ehr", TenantID: devTenant, BaseURL: base, AuthType: "none"}, nil); err != nil {
		return err
	}
	if err := s.app.store.AttachSource(ctx, devTenant, devSubscription, "load-ehr", "", 0); err != nil {
		return err
	}

	fmt.Fprintf(stderr, "posting with %d clients …\n", conc)
	start := time.Now()
	lat, failed, err := postAll(ctx, s, conc, n, stderr, func(i int) ([]byte, error) {
		return idOnlyNotification(base, "ExplanationOfBenefit", fmt.Sprintf("load-%d", i), int64(i+1)), nil
	})
	if err != nil {
		return err
	}
	intake := time.Since(start)
	fmt.Fprintln(stderr, "starting the worker; waiting for delivery …")
	start = time.Now()
	if err := s.StartWorker(); err != nil {
		return err
	}
	settled, moved := int64(-1), time.Now()
	for {
		c, err := s.app.store.CountAll(ctx, devTenant)
		if err != nil {
			return err
		}
		if c.Notices >= int64(n-failed) && c.ByStatus[delivery.NoticePending] == 0 {
			break
		}
		if now := c.Notices - c.ByStatus[delivery.NoticePending]; now != settled {
			settled, moved = now, time.Now()
		} else if time.Since(moved) > stall {
			return fmt.Errorf("no notice settled for %s: %d of %d", stall, settled, n-failed)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	total := time.Since(start)
	c, err := s.app.store.CountAll(ctx, devTenant)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, inProcessNote)
	fmt.Fprintf(stdout, "machine: %s\ncommit: %s\n", machine(), commit())
	fmt.Fprintf(stdout, "settings: id-only, %d notifications, %d clients, worker concurrency %d, the worker stopped during intake\n", n, conc, workers)
	fmt.Fprintf(stdout, "intake:   %.0f notifications/s  p50 %s  p99 %s  max %s  (non-202: %d)\n",
		float64(n)/intake.Seconds(), pctOf(lat, 0.50), pctOf(lat, 0.99), lat[len(lat)-1].Round(10*time.Microsecond), failed)
	fmt.Fprintf(stdout, "delivery: %.0f notices/s from a full queue to the mail catcher over STARTTLS (%d sent, %d denied, %d failed in %s)\n",
		float64(c.ByStatus[delivery.NoticeSent])/total.Seconds(), c.ByStatus[delivery.NoticeSent], c.ByStatus[delivery.NoticeDenied], c.ByStatus[delivery.NoticeFailed], total.Round(time.Millisecond))
	return nil
}

// serveLoadFHIR serves resources by "Type/id" on a loopback port, as the FHIR
// server an id-only notification points at.
func serveLoadFHIR(resources map[string][]byte) (base string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, ok := resources[strings.TrimPrefix(r.URL.Path, "/fhir/")]
		w.Header().Set("Content-Type", "application/fhir+json")
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}`))
			return
		}
		w.Write(res)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String() + "/fhir", func() { srv.Close() }, nil
}

// idOnlyNotification is a Backport event-notification with id-only content.
func idOnlyNotification(base, typ, id string, number int64) []byte {
	ref := base + "/" + typ + "/" + id
	return []byte(fmt.Sprintf(`{"resourceType":"Bundle","type":"history","entry":[{"fullUrl":"urn:uuid:00000000-0000-4000-8000-%012d","resource":{"resourceType":"Parameters","parameter":[{"name":"subscription","valueReference":{"reference":"%s/Subscription/load"}},{"name":"status","valueCode":"active"},{"name":"type","valueCode":"event-notification"},{"name":"notification-event","part":[{"name":"event-number","valueString":"%d"},{"name":"focus","valueReference":{"reference":%q}}]}]},"request":{"method":"GET","url":"Subscription/load/$status"},"response":{"status":"200"}},{"fullUrl":%q,"request":{"method":"PUT","url":"%s/%s"},"response":{"status":"200"}}]}`,
		number, base, number, ref, ref, typ, id))
}
