package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/store"
)

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("load [flags]", `Starts a local stack like "tidings dev", posts N distinct full-resource EOB
notifications (copies of one published example with new ids) from C concurrent
clients, waits until the worker has delivered them to the local mail catcher over
STARTTLS, and prints intake throughput and latency percentiles and delivery
throughput. Nothing leaves this machine.`, stderr)
	n := fs.Int("n", 2000, "notifications to post")
	conc := fs.Int("c", 16, "concurrent clients")
	workers := fs.Int("worker-concurrency", 20, "worker concurrency (Asynq)")
	tmpl := fs.String("eob", "examples/replay/ExplanationOfBenefit-EOBProfessional1.json", "EOB resource to copy")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n <= 0 || *conc <= 0 {
		return usageError{"-n and -c must be positive"}
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

	fmt.Fprintf(stderr, "preparing %d notifications …\n", *n)
	bodies := make([][]byte, *n)
	for i := range bodies {
		var res map[string]any
		if err := json.Unmarshal(raw, &res); err != nil {
			return fmt.Errorf("%s: %w", *tmpl, err)
		}
		res["id"] = fmt.Sprintf("load-%d", i)
		res["meta"] = map[string]any{"versionId": "1"}
		b, _ := json.Marshal(res)
		if bodies[i], err = fhir.WrapResources(b, s.BaseURL+"/fhir/r4/Subscription/"+devSubscription, "load", time.Now().UTC()); err != nil {
			return err
		}
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc}}
	lat := make([]time.Duration, *n)
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	fmt.Fprintf(stderr, "posting with %d clients …\n", *conc)
	start := time.Now()
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= *n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.BaseURL+"/fhir/r4/notify/"+devSubscription, bytes.NewReader(bodies[i]))
				req.Header.Set("Content-Type", "application/fhir+json")
				req.Header.Set("Authorization", "Bearer "+s.Secret)
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				lat[i] = time.Since(t0)
				if err != nil || resp.StatusCode != http.StatusAccepted {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
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
		if c.Notices >= int64(*n-int(failures.Load())) && c.ByStatus[store.NoticePending] == 0 {
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
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	host, _ := os.Hostname()
	fmt.Fprintf(stdout, "machine: %s, %d notifications, %d clients, worker concurrency %d\n", host, *n, *conc, *workers)
	fmt.Fprintf(stdout, "intake:   %.0f notifications/s  p50 %s  p99 %s  max %s  (non-202: %d)\n",
		float64(*n)/intake.Seconds(), pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond), failures.Load())
	fmt.Fprintf(stdout, "delivery: %.0f notices/s from a full queue to the mail catcher over STARTTLS (%d sent, %d denied, %d failed in %s)\n",
		float64(c.ByStatus[store.NoticeSent])/total.Seconds(), c.ByStatus[store.NoticeSent], c.ByStatus[store.NoticeDenied], c.ByStatus[store.NoticeFailed], total.Round(time.Millisecond))
	return nil
}
