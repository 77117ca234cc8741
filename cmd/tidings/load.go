package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"sort"
	"strings"
	"time"

	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
)

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("load [flags]", `Starts a local stack like "tidings dev", posts N distinct EOB notifications
(copies of one published example with new ids) from C concurrent clients with the
worker stopped, then starts the worker and waits until it has delivered them to
the local mail catcher over STARTTLS. Prints intake throughput and latency
percentiles, and delivery throughput. With -mode id-only the notifications carry
only references, and a FHIR server on loopback (inside this command, serving the
same copies) answers the worker's reads. With -mode workflows it books N
appointments (default 100000) and reports how fast runs are created, what the
waiting runs cost in Redis and Postgres, and how late reminders go out after
their due time. Nothing leaves this machine.`, stderr)
	mode := fs.String("mode", "full-resource", "full-resource, id-only or workflows")
	near := fs.Int("due", 2000, "with -mode workflows: of the N runs, how many have a reminder due during the run")
	apptFile := fs.String("appointment", "fhir/testdata/hl7-fhir-r4-spec/appointment-example.json", "with -mode workflows: the Appointment (or Bundle holding one) to copy")
	n := fs.Int("n", 2000, "notifications to post")
	conc := fs.Int("c", 16, "concurrent clients")
	workers := fs.Int("worker-concurrency", 20, "worker concurrency (Asynq)")
	tmpl := fs.String("eob", "examples/replay/ExplanationOfBenefit-EOBProfessional1.json", "EOB resource to copy")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (API and worker) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *n <= 0 || *conc <= 0 {
		return usageError{"-n and -c must be positive"}
	}
	if *mode == "workflows" {
		if *n == 2000 {
			*n = 100000
		}
		return runWorkflowLoad(ctx, workflowLoad{runs: *n, due: *near, clients: *conc, workers: *workers, appointment: *apptFile}, stdout, stderr)
	}
	if *mode != "full-resource" && *mode != "id-only" {
		return usageError{"-mode must be full-resource, id-only or workflows"}
	}
	raw, err := os.ReadFile(*tmpl)
	if err != nil {
		return err
	}
	mailDir, err := os.MkdirTemp("", "tidings-load-mail-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(mailDir)
	// The worker starts after intake so each figure measures one side alone.
	s, err := startStack(ctx, stackOptions{MailDir: mailDir, Concurrency: *workers, Progress: stderr, DeferWorker: true})
	if err != nil {
		return err
	}
	defer s.Close()

	fmt.Fprintf(stderr, "preparing %d %s notifications …\n", *n, *mode)
	bodies := make([][]byte, *n)
	served := map[string][]byte{}
	for i := range bodies {
		var res map[string]any
		if err := json.Unmarshal(raw, &res); err != nil {
			return fmt.Errorf("%s: %w", *tmpl, err)
		}
		id := fmt.Sprintf("load-%d", i)
		res["id"] = id
		res["meta"] = map[string]any{"versionId": "1"}
		b, _ := json.Marshal(res)
		if *mode == "id-only" {
			served["ExplanationOfBenefit/"+id] = b
			continue
		}
		if bodies[i], err = fhir.WrapResources(b, s.BaseURL+"/fhir/r4/Subscription/"+devSubscription, "load", time.Now().UTC()); err != nil {
			return err
		}
	}
	if *mode == "id-only" {
		base, stop, err := serveLoadFHIR(served)
		if err != nil {
			return err
		}
		defer stop()
		if err := s.app.store.CreateSource(ctx, intake.Source{ID: "load-ehr", TenantID: devTenant, BaseURL: base, AuthType: "none"}, nil); err != nil {
			return err
		}
		if err := s.app.store.AttachSource(ctx, devSubscription, "load-ehr", "", 0); err != nil {
			return err
		}
		for i := range bodies {
			bodies[i] = idOnlyNotification(base, "ExplanationOfBenefit", fmt.Sprintf("load-%d", i), int64(i+1))
		}
	}

	fmt.Fprintf(stderr, "posting with %d clients …\n", *conc)
	start := time.Now()
	lat, failed, err := postAll(ctx, s, *conc, *n, func(i int) ([]byte, error) { return bodies[i], nil })
	if err != nil {
		return err
	}
	intake := time.Since(start)
	fmt.Fprintln(stderr, "starting the worker; waiting for delivery …")
	start = time.Now()
	if err := s.StartWorker(); err != nil {
		return err
	}
	for {
		c, err := s.app.store.CountAll(ctx, devTenant)
		if err != nil {
			return err
		}
		if c.Notices >= int64(*n-failed) && c.ByStatus[delivery.NoticePending] == 0 {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	total := time.Since(start)
	c, _ := s.app.store.CountAll(ctx, devTenant)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	host, _ := os.Hostname()
	fmt.Fprintf(stdout, "machine: %s, %d notifications, %d clients, worker concurrency %d\n", host, *n, *conc, *workers)
	fmt.Fprintf(stdout, "intake:   %.0f notifications/s  p50 %s  p99 %s  max %s  (non-202: %d)\n",
		float64(*n)/intake.Seconds(), pctOf(lat, 0.50), pctOf(lat, 0.99), lat[len(lat)-1].Round(10*time.Microsecond), failed)
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
