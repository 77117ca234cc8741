package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/tidings-health/tidings/api"
	"github.com/tidings-health/tidings/delivery"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
)

// DevSummary is what `tidings dev --json` prints: counts and reasons, no PHI.
type DevSummary struct {
	Files      int              `json:"files"`
	Received   int              `json:"received"`   // notifications answered 2xx
	Events     int              `json:"events"`     // new events stored
	Duplicates int              `json:"duplicates"` // events already stored
	Ignored    int              `json:"ignored"`    // events whose focus type is not notified
	Sent       int              `json:"sent"`
	Denied     int              `json:"denied"`
	Failed     int              `json:"failed"`
	Skipped    int              `json:"skipped"` // events no active workflow wants
	Runs       map[string]int64 `json:"runs"`    // workflow runs by status: waiting (for a time or an event), ended
	Pending    int              `json:"pending"` // still not final when the wait ended
	Notices    []NoticeLine     `json:"notices"` // denied and failed notices
	Rejected   []RejectedRow    `json:"rejected_files"`
	MailDir    string           `json:"mail_dir"`
	EMLFiles   int              `json:"eml_files"`
	TimedOut   bool             `json:"timed_out,omitempty"`
}

// NoticeLine is one denied or failed notice.
type NoticeLine struct {
	File         string   `json:"file,omitempty"`
	ResourceType string   `json:"resource_type"`
	ResourceID   string   `json:"resource_id"`
	Status       string   `json:"status"`
	Reasons      []string `json:"reasons"`
}

// RejectedRow is a file that could not be used, and why.
type RejectedRow struct {
	File   string `json:"file"`
	Status int    `json:"http_status,omitempty"`
	Reason string `json:"reason"`
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dev [flags]", `Starts PostgreSQL and Redis from this machine's packages on free loopback ports in a
temporary folder, applies the migrations, runs the API, the worker and a local mail
catcher (STARTTLS, self-signed certificate) in this process, replays every *.json file
of the replay folder, waits until every notice is sent, denied or failed, and prints
what happened. A notification Bundle is posted as is; a bare ExplanationOfBenefit or
Appointment, or a Bundle of resources, is first wrapped into a full-resource
event-notification Bundle. A patient without an email address gets a placeholder on
the reserved domain patients.invalid; mail only ever reaches the local catcher.
Ctrl-C stops everything.`, stderr)
	replay := fs.String("replay", "examples/replay", "folder of *.json files to replay")
	mailDir := fs.String("mail-dir", "tidings-mail", "folder the mail catcher writes .eml files into")
	exit := fs.Bool("exit", false, "exit after the summary instead of serving until Ctrl-C")
	asJSON := fs.Bool("json", false, "print the summary as one JSON object on stdout")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for every notice to be final")
	verbose := fs.Bool("verbose", false, "write the service's JSON logs to stderr instead of a log file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(*replay, "*.json"))
	if err != nil {
		return err
	}
	if st, err := os.Stat(*replay); err != nil || !st.IsDir() {
		return usageError{fmt.Sprintf("replay folder %q does not exist", *replay)}
	}
	sort.Strings(files)
	progress := stderr
	opts := stackOptions{MailDir: *mailDir, Progress: progress}
	if *verbose {
		opts.LogTo = stderr
	}
	if abs, err := filepath.Abs(*mailDir); err == nil {
		opts.MailDir = abs
	}
	s, err := startStack(ctx, opts)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(progress, "API on %s, subscription %q (its secret is in %s)\n", s.BaseURL, devSubscription, s.SecretFile)
	if s.LogFile != "" {
		fmt.Fprintf(progress, "service logs: %s\n", s.LogFile)
	}

	sum := DevSummary{Files: len(files), MailDir: s.MailDir, Notices: []NoticeLine{}, Rejected: []RejectedRow{}}
	fileOf := map[string]string{}
	fmt.Fprintf(progress, "replaying %d file(s) from %s\n", len(files), *replay)
	for i, f := range files {
		line := replayFile(ctx, s, f, &sum, fileOf)
		fmt.Fprintf(progress, "  [%d/%d] %s: %s\n", i+1, len(files), filepath.Base(f), line)
	}
	fmt.Fprintln(progress, "waiting for the worker …")
	if err := waitFinal(ctx, s, *timeout); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		sum.TimedOut = true
	}
	if err := fillOutcomes(ctx, s, &sum, fileOf); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return err
		}
	} else {
		printSummary(stdout, sum)
	}
	if sum.TimedOut {
		return fmt.Errorf("%d notice(s) were not final after %s", sum.Pending, *timeout)
	}
	if *exit {
		return nil
	}
	fmt.Fprintf(progress, "\nStill running. Post more with:\n  curl -H 'Content-Type: application/fhir+json' -H \"Authorization: Bearer $(cat %s)\" --data-binary @FILE %s\nCtrl-C stops everything.\n",
		s.SecretFile, intake.NotifyURL(s.BaseURL, devTenant, devSubscription))
	<-ctx.Done()
	fmt.Fprintln(progress, "stopping …")
	return nil
}

// replayFile posts one file and records the outcome; it returns a progress line.
func replayFile(ctx context.Context, s *stack, path string, sum *DevSummary, fileOf map[string]string) string {
	name := filepath.Base(path)
	reject := func(status int, reason string) string {
		sum.Rejected = append(sum.Rejected, RejectedRow{File: name, Status: status, Reason: reason})
		return "not used: " + reason
	}
	body, err := os.ReadFile(path)
	if err != nil {
		return reject(0, "cannot read the file: "+err.Error())
	}
	n, perr := fhir.ParseNotification(body)
	if perr != nil {
		if !errors.Is(perr, fhir.ErrNotNotification) {
			return reject(0, perr.Error())
		}
		wrapped, werr := fhir.WrapResources(body, s.BaseURL+"/fhir/r4/Subscription/"+devSubscription,
			"http://hl7.org/fhir/us/carin-bb/SubscriptionTopic/eob", time.Now().UTC())
		if werr != nil {
			return reject(0, werr.Error())
		}
		body = wrapped
		if n, perr = fhir.ParseNotification(body); perr != nil {
			return reject(0, "wrapped bundle does not parse: "+perr.Error())
		}
	}
	for _, ev := range n.Events {
		fileOf[ev.ResourceType+"/"+ev.ID] = name
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, intake.NotifyURL(s.BaseURL, devTenant, devSubscription), bytes.NewReader(body))
	if err != nil {
		return reject(0, err.Error())
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+s.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reject(0, "post failed: "+err.Error())
	}
	defer resp.Body.Close()
	var oo api.OperationOutcome
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&oo)
	diag := ""
	if len(oo.Issue) > 0 {
		diag = oo.Issue[0].Diagnostics
	}
	if resp.StatusCode >= 300 {
		return reject(resp.StatusCode, diag)
	}
	sum.Received++
	acc, _ := strconv.Atoi(resp.Header.Get("X-Tidings-Accepted"))
	dup, _ := strconv.Atoi(resp.Header.Get("X-Tidings-Duplicates"))
	ign, _ := strconv.Atoi(resp.Header.Get("X-Tidings-Ignored"))
	sum.Events += acc
	sum.Duplicates += dup
	sum.Ignored += ign
	return fmt.Sprintf("%d %s (%s; new events %d, duplicates %d, ignored %d)", resp.StatusCode, n.Type, diag, acc, dup, ign)
}

// waitFinal waits until the outbox is drained and no notice is pending.
func waitFinal(ctx context.Context, s *stack, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := s.app.store.CountAll(ctx, devTenant)
		if err == nil && c.OutboxPending == 0 && c.ByStatus[delivery.NoticePending] == 0 {
			if n, err := s.app.store.Unsettled(ctx, devTenant, time.Now()); err == nil && n == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func fillOutcomes(ctx context.Context, s *stack, sum *DevSummary, fileOf map[string]string) error {
	outs, err := s.app.store.NoticeOutcomes(context.WithoutCancel(ctx), devTenant)
	if err != nil {
		return err
	}
	for _, o := range outs {
		switch o.Status {
		case delivery.NoticeSent:
			sum.Sent++
		case delivery.NoticeSkipped:
			sum.Skipped++
		case delivery.NoticeDenied, delivery.NoticeFailed:
			if o.Status == delivery.NoticeDenied {
				sum.Denied++
			} else {
				sum.Failed++
			}
			sum.Notices = append(sum.Notices, NoticeLine{File: fileOf[o.ResourceType+"/"+o.ResourceID],
				ResourceType: o.ResourceType, ResourceID: o.ResourceID, Status: o.Status, Reasons: o.Reasons})
		default:
			sum.Pending++
		}
	}
	if sum.Runs, err = s.app.store.RunCounts(context.WithoutCancel(ctx), devTenant); err != nil {
		return err
	}
	emls, _ := filepath.Glob(filepath.Join(s.MailDir, "*.eml"))
	sum.EMLFiles = len(emls)
	return nil
}

func printSummary(w io.Writer, s DevSummary) {
	fmt.Fprintf(w, "\nNotifications received: %d of %d file(s) (new events %d, duplicates %d, not notified %d)\n",
		s.Received, s.Files, s.Events, s.Duplicates, s.Ignored)
	fmt.Fprintf(w, "Workflow runs: %d waiting (a reminder's time, a portal view), %d ended\n", s.Runs["waiting"], s.Runs["ended"])
	fmt.Fprintf(w, "Notices: sent %d, denied %d, failed %d, skipped %d (no active workflow)", s.Sent, s.Denied, s.Failed, s.Skipped)
	if s.Pending > 0 {
		fmt.Fprintf(w, ", still pending %d", s.Pending)
	}
	fmt.Fprintln(w)
	for _, n := range s.Notices {
		fmt.Fprintf(w, "  %s %s/%s (%s):\n", n.Status, n.ResourceType, n.ResourceID, n.File)
		for _, r := range n.Reasons {
			fmt.Fprintf(w, "    - %s\n", r)
		}
	}
	for _, r := range s.Rejected {
		fmt.Fprintf(w, "  file not used: %s: %s\n", r.File, r.Reason)
	}
	fmt.Fprintf(w, "Mail: %d .eml file(s) in %s\n", s.EMLFiles, s.MailDir)
}
