package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/tidings-health/tidings/audit"
)

// DefaultSchedule is how long a message waits after each failed attempt
// before the next; after the last it is dead (eight attempts over about a
// day and a quarter).
var DefaultSchedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}

// Message is one event for one endpoint, claimed for sending.
type Message struct {
	ID                   int64
	TenantID, EndpointID string
	URL                  string
	Secret               []byte // opened
	MsgID                string // webhook-id
	Payload              []byte
	Attempts             int // before this one
}

// Result is what an attempt came to. A zero Next with Delivered false
// makes the message dead.
type Result struct {
	Delivered bool
	Status    int    // the endpoint's HTTP status; 0 when it gave none
	Err       string // why it failed: a status or a connection error, never the body
	Next      time.Time
}

// Store keeps endpoints, the per-tenant fan-out cursor and the messages.
type Store interface {
	// WebhookTenants are the tenants with an enabled endpoint.
	WebhookTenants(ctx context.Context) ([]string, error)
	// FanOut reads up to limit rows of the tenant's audit chain after its
	// cursor and, in one transaction, adds a message per row that event
	// turns into a payload for each enabled endpoint taking its type, and
	// moves the cursor past them; it returns how many rows it read.
	FanOut(ctx context.Context, tenant string, limit int, event func(audit.Row) (typ string, payload []byte, ok bool)) (int, error)
	// ClaimMessages claims up to limit pending messages due by now, each
	// for lease (another dispatcher takes it after that).
	ClaimMessages(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Message, error)
	// RecordAttempt records an attempt at a claimed message.
	RecordAttempt(ctx context.Context, id int64, r Result) error
}

// Dispatcher fans each tenant's audit chain out to its endpoints and sends
// what is due. Any number may run: the fan-out takes the cursor's row
// lock, and sending claims messages.
type Dispatcher struct {
	Store Store
	// Client posts the messages; it should refuse private networks
	// (fhir/client.PublicOnlyHTTPClient) unless the endpoints are local.
	Client   *http.Client
	Schedule []time.Duration // nil: DefaultSchedule
	Every    time.Duration   // Run's period
	Log      *slog.Logger
	Now      func() time.Time // nil: time.Now
}

const (
	fanOutRows    = 500
	claimMessages = 32
	sendAtOnce    = 4
	claimLease    = 2 * time.Minute
	attemptLimit  = 15 * time.Second
	maxErrLen     = 200
)

// Run passes every Every until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {
	t := time.NewTicker(d.Every)
	defer t.Stop()
	for {
		if _, _, err := d.Pass(ctx); err != nil && ctx.Err() == nil && d.Log != nil {
			d.Log.Warn("webhook pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass fans out every tenant's new chain rows and sends the messages due
// now; it reports how many rows it read and messages it attempted.
func (d *Dispatcher) Pass(ctx context.Context) (rows, attempted int, err error) {
	tenants, err := d.Store.WebhookTenants(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("webhook tenants: %w", err)
	}
	for _, t := range tenants {
		for {
			n, err := d.Store.FanOut(ctx, t, fanOutRows, payloadOf)
			if err != nil {
				return rows, 0, fmt.Errorf("webhook fan-out of tenant %s: %w", t, err)
			}
			rows += n
			if n < fanOutRows {
				break
			}
		}
	}
	for {
		msgs, err := d.Store.ClaimMessages(ctx, d.now(), claimLease, claimMessages)
		if err != nil {
			return rows, attempted, fmt.Errorf("claim webhook messages: %w", err)
		}
		if len(msgs) == 0 {
			return rows, attempted, nil
		}
		if err := d.sendAll(ctx, msgs); err != nil {
			return rows, attempted, err
		}
		attempted += len(msgs)
		if len(msgs) < claimMessages {
			return rows, attempted, nil
		}
	}
}

func payloadOf(r audit.Row) (string, []byte, bool) {
	e, ok := Of(r)
	if !ok {
		return "", nil, false
	}
	b, err := json.Marshal(e)
	return e.Type, b, err == nil
}

func (d *Dispatcher) sendAll(ctx context.Context, msgs []Message) error {
	sem := make(chan struct{}, sendAtOnce)
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	for i, m := range msgs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = d.Store.RecordAttempt(ctx, m.ID, d.attempt(ctx, m))
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// attempt posts one message and says what came of it.
func (d *Dispatcher) attempt(ctx context.Context, m Message) Result {
	status, err := d.post(ctx, m)
	if err == nil {
		return Result{Delivered: true, Status: status}
	}
	r := Result{Status: status, Err: truncate(err.Error(), maxErrLen)}
	schedule := d.Schedule
	if schedule == nil {
		schedule = DefaultSchedule
	}
	if m.Attempts < len(schedule) {
		r.Next = d.now().Add(schedule[m.Attempts])
	}
	return r
}

func (d *Dispatcher) post(ctx context.Context, m Message) (int, error) {
	wh, err := standardwebhooks.NewWebhookRaw(m.Secret)
	if err != nil {
		return 0, err
	}
	now := d.now()
	sig, err := wh.Sign(m.MsgID, now, m.Payload)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, attemptLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL, bytes.NewReader(m.Payload))
	if err != nil {
		return 0, errors.New("the endpoint URL is not usable")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Tidings-Webhooks/1")
	req.Header.Set(standardwebhooks.HeaderWebhookID, m.MsgID)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, sig)
	resp, err := d.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may carry the receiver's token
		}
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("the endpoint answered %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

func (d *Dispatcher) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
