package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidings-health/tidings/fhir"
)

// eobTopic is the CARIN EOB SubscriptionTopic the load subscription claims.
const eobTopic = "http://hl7.org/fhir/us/carin-bb/SubscriptionTopic/eob"

// bodyTemplate is a notification with holes: filling one costs a single
// allocation of the body's size, so the load command spends next to nothing
// of the machine it measures on making bodies.
type bodyTemplate struct {
	parts [][]byte // text around the holes: len(holes)+1 of them
	holes []int    // the marker (and so the value) that fills each hole
}

// newBodyTemplate cuts tmpl at every occurrence of markers.
func newBodyTemplate(tmpl []byte, markers ...string) *bodyTemplate {
	t := &bodyTemplate{}
	for {
		at, which := -1, -1
		for m, marker := range markers {
			if i := bytes.Index(tmpl, []byte(marker)); i >= 0 && (at < 0 || i < at) {
				at, which = i, m
			}
		}
		if at < 0 {
			t.parts = append(t.parts, tmpl)
			return t
		}
		t.parts = append(t.parts, tmpl[:at])
		t.holes = append(t.holes, which)
		tmpl = tmpl[at+len(markers[which]):]
	}
}

// count is how many holes marker m leaves.
func (t *bodyTemplate) count(m int) int {
	n := 0
	for _, h := range t.holes {
		if h == m {
			n++
		}
	}
	return n
}

// fill returns the body with each hole filled by values[its marker].
func (t *bodyTemplate) fill(values ...string) []byte {
	size := 0
	for _, p := range t.parts {
		size += len(p)
	}
	for _, h := range t.holes {
		size += len(values[h])
	}
	out := make([]byte, 0, size)
	for i, p := range t.parts {
		out = append(out, p...)
		if i < len(t.holes) {
			out = append(out, values[t.holes[i]]...)
		}
	}
	return out
}

// Markers in the EOB template: the resource id, the event number and the
// patient reference. They stand inside JSON strings, where the values put
// in their place (ids of letters, digits and dashes; a decimal number) need
// no escaping.
const (
	idMarker      = "LOADIDMARKER7f3a9c"
	numberMarker  = "987654321987654321"
	patientMarker = "Patient/LOADPATIENTMARKER4e1d"
)

// eobNotifications makes distinct full-resource EOB notifications: copies of
// one published example with new ids, numbered as a FHIR server numbers the
// events of a subscription (1, 2, 3 …), for one patient after another.
type eobNotifications struct {
	tmpl     *bodyTemplate
	Patients []string // patient references, e.g. the example's Patient/Patient2
}

// newEOBNotifications copies the EOB raw for patients patients: with one,
// the example's own; with more, Patient/load-0, Patient/load-1, ….
func newEOBNotifications(raw []byte, subscriptionURL string, patients int) (*eobNotifications, error) {
	var res map[string]any
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, err
	}
	if res["resourceType"] != "ExplanationOfBenefit" {
		return nil, errors.New("not an ExplanationOfBenefit")
	}
	patient, _ := res["patient"].(map[string]any)
	ref, _ := patient["reference"].(string)
	if ref == "" {
		return nil, errors.New("the ExplanationOfBenefit names no patient reference")
	}
	res["id"] = idMarker
	res["meta"] = map[string]any{"versionId": "1"}
	patient["reference"] = patientMarker
	eob, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	wrapped, err := fhir.WrapResources(eob, subscriptionURL, eobTopic, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	// WrapResources numbers its events from 1; put the marker in their place.
	var bundle map[string]any
	if err := json.Unmarshal(wrapped, &bundle); err != nil {
		return nil, err
	}
	entries, _ := bundle["entry"].([]any)
	if len(entries) == 0 {
		return nil, errors.New("wrapped notification has no entries")
	}
	status, _ := entries[0].(map[string]any)["resource"].(map[string]any)
	params, _ := status["parameter"].([]any)
	for _, p := range params {
		p := p.(map[string]any)
		switch p["name"] {
		case "events-since-subscription-start":
			p["valueString"] = numberMarker
		case "notification-event":
			for _, part := range p["part"].([]any) {
				if part := part.(map[string]any); part["name"] == "event-number" {
					part["valueString"] = numberMarker
				}
			}
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(bundle); err != nil {
		return nil, err
	}
	t := newBodyTemplate(bytes.TrimSpace(buf.Bytes()), idMarker, numberMarker, patientMarker)
	if t.count(0) < 2 || t.count(1) != 2 || t.count(2) != 1 {
		return nil, fmt.Errorf("notification template has %d id, %d event-number and %d patient places, want at least 2, 2 and 1", t.count(0), t.count(1), t.count(2))
	}
	e := &eobNotifications{tmpl: t, Patients: []string{ref}}
	if patients > 1 {
		e.Patients = make([]string, patients)
		for k := range e.Patients {
			e.Patients[k] = "Patient/load-" + strconv.Itoa(k)
		}
	}
	return e, nil
}

// body is the notification of EOB id carrying event number, about the
// patients in turn.
func (e *eobNotifications) body(id string, number int) []byte {
	return e.tmpl.fill(id, strconv.Itoa(number), e.Patients[(number-1)%len(e.Patients)])
}

// poster sends requests as a FHIR server or a payer's system would: a 429
// is retried after its Retry-After; any other answer is final.
type poster struct {
	method      string
	url         func(i int) string
	contentType string
	token       string // bearer
	body        func(i int) []byte
	client      *http.Client
	accepted    atomic.Int64 // answered 2xx so far, for progress lines
}

// newPoster sends with at most conns connections at once (0: no limit, for
// an open loop).
func newPoster(conns int, method, contentType, token string, url func(i int) string, body func(i int) []byte) *poster {
	tr := &http.Transport{MaxIdleConnsPerHost: max(conns, 256), MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}
	return &poster{method: method, url: url, contentType: contentType, token: token, body: body, client: &http.Client{Transport: tr}}
}

// notifier posts notification body(i) to a subscription.
func notifier(baseURL, subscription, secret string, conns int, body func(i int) []byte) *poster {
	url := baseURL + "/fhir/r4/notify/" + subscription
	return newPoster(conns, http.MethodPost, "application/fhir+json", secret, func(int) string { return url }, body)
}

// postOutcome is what posting notifications from..from+n-1 gave.
type postOutcome struct {
	lat       []time.Duration   // per accepted notification: first attempt (or its scheduled time) to its 2xx
	began     []time.Duration   // lat's partner: when that latency began, from start (lat is sorted, this is not)
	p99Tenths [10]time.Duration // the p99 of each tenth, by began (latencyTenths)
	throttled int               // 429 answers, each retried
	failed    map[int]int       // other final answers by status; 0: no answer
	firstErr  string            // the first failure, for the report
	start     time.Time         // the first request
	lastOK    time.Time         // the last 2xx
}

// accepted is the number of notifications answered 2xx.
func (r *postOutcome) accepted() int { return len(r.lat) }

// failures is the number of notifications not accepted.
func (r *postOutcome) failures() int {
	n := 0
	for _, c := range r.failed {
		n += c
	}
	return n
}

// collector gathers one posting run's outcomes from many goroutines.
type collector struct {
	mu        sync.Mutex
	res       postOutcome
	lastOK    atomic.Int64
	throttled atomic.Int64
}

func newCollector(n int, start time.Time) *collector {
	return &collector{res: postOutcome{lat: make([]time.Duration, 0, n), began: make([]time.Duration, 0, n), failed: map[int]int{}, start: start}}
}

func (c *collector) done() postOutcome {
	r := c.res
	r.throttled = int(c.throttled.Load())
	if ns := c.lastOK.Load(); ns > 0 {
		r.lastOK = time.Unix(0, ns)
	}
	r.p99Tenths = latencyTenths(r.began, r.lat, 0.99)
	r.began = nil
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	return r
}

// latencyTenths splits the notifications into tenths in the order their
// latency began (when each was due, or first sent) and returns quantile q
// of each tenth's latencies: whether a tail is a moment of the run (its
// start, say) or all of it.
func latencyTenths(began, lat []time.Duration, q float64) (out [10]time.Duration) {
	order := make([]int, len(lat))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return began[order[a]] < began[order[b]] })
	for k := range out {
		part := order[k*len(order)/10 : (k+1)*len(order)/10]
		if len(part) == 0 {
			continue
		}
		xs := make([]time.Duration, len(part))
		for i, j := range part {
			xs[i] = lat[j]
		}
		slices.Sort(xs)
		out[k] = pctOf(xs, q)
	}
	return out
}

// post sends notification i until it gets an answer other than 429, and
// records it; since is when its latency starts.
func (p *poster) post(ctx context.Context, i int, since time.Time, c *collector) {
	body := p.body(i)
	for {
		req, err := http.NewRequestWithContext(ctx, p.method, p.url(i), bytes.NewReader(body))
		if err != nil {
			c.fail(0, err.Error())
			return
		}
		req.Header.Set("Content-Type", p.contentType)
		req.Header.Set("Authorization", "Bearer "+p.token)
		resp, err := p.client.Do(req)
		if err != nil {
			c.fail(0, err.Error())
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		now := time.Now()
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			c.throttled.Add(1)
			wait := time.Second
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
				wait = time.Duration(s) * time.Second
			}
			if sleepCtx(ctx, wait) != nil {
				c.fail(0, ctx.Err().Error())
				return
			}
			continue
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			for {
				last := c.lastOK.Load()
				if now.UnixNano() <= last || c.lastOK.CompareAndSwap(last, now.UnixNano()) {
					break
				}
			}
			p.accepted.Add(1)
			c.mu.Lock()
			c.res.lat = append(c.res.lat, now.Sub(since))
			c.res.began = append(c.res.began, since.Sub(c.res.start))
			c.mu.Unlock()
		default:
			c.fail(resp.StatusCode, resp.Status)
		}
		return
	}
}

func (c *collector) fail(status int, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.failed[status]++
	if c.res.firstErr == "" {
		c.res.firstErr = why
	}
}

// closedLoop posts notifications from..from+n-1 from clients goroutines,
// each sending its next one when the last is answered.
func (p *poster) closedLoop(ctx context.Context, clients, from, n int) postOutcome {
	c := newCollector(n, time.Now())
	var next atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1)) - 1
				if k >= n || ctx.Err() != nil {
					return
				}
				p.post(ctx, from+k, time.Now(), c)
			}
		}()
	}
	wg.Wait()
	return c.done()
}

// openLoop posts notifications from..from+n-1 at a fixed arrival rate,
// whatever the answers take: notification k is due at start + k/rate, and
// its latency counts from then, so a slow answer cannot hide the ones that
// queue behind it.
func (p *poster) openLoop(ctx context.Context, rate float64, from, n int) postOutcome {
	start := time.Now()
	c := newCollector(n, start)
	var wg sync.WaitGroup
	for k := range n {
		due := start.Add(time.Duration(float64(k) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 && sleepCtx(ctx, d) != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.post(ctx, from+k, due, c)
		}()
	}
	wg.Wait()
	return c.done()
}

// sayTo prints a line formatted as fmt.Printf does to w; nothing when w
// is nil.
func sayTo(w io.Writer) func(format string, args ...any) {
	return func(format string, args ...any) {
		if w != nil {
			fmt.Fprintf(w, format+"\n", args...)
		}
	}
}

// progressEvery is how often long work prints a progress line.
var progressEvery = 10 * time.Second

// progressLines says line() every progressEvery until stop is first
// called: a long run shows that it moves. line reads counters this process
// keeps (nothing is asked of Postgres inside a timed window).
func progressLines(say func(format string, args ...any), line func() string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				say("  %s …", line())
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}
