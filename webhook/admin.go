package webhook

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net"
	"net/url"
	"regexp"
	"time"

	"github.com/tidings-health/tidings/fault"
)

// Endpoint is a tenant's webhook endpoint as listed (its secret is shown
// once, when it is made).
type Endpoint struct {
	TenantID   string    `json:"-"`
	ID         string    `json:"id"`
	URL        string    `json:"url"`
	EventTypes []string  `json:"event_types"`
	Enabled    bool      `json:"enabled"`
	CreatedAt  time.Time `json:"created_at"`
}

// Listed is a message as an operator sees it: no body (ids and statuses,
// but a tenant's own systems are where those belong).
type Listed struct {
	ID            int64      `json:"id"`
	EndpointID    string     `json:"endpoint_id"`
	MessageID     string     `json:"webhook_id"`
	EventType     string     `json:"event_type"`
	Status        string     `json:"status"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt time.Time  `json:"next_attempt_at"`
	LastStatus    int        `json:"last_status"`
	LastError     string     `json:"last_error"`
	CreatedAt     time.Time  `json:"created_at"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty"`
}

// Message statuses.
const (
	StatusPending   = "pending"
	StatusDelivered = "delivered"
	StatusDead      = "dead"
)

// AdminStore keeps what Admin manages.
type AdminStore interface {
	CreateWebhookEndpoint(ctx context.Context, e Endpoint, secret []byte) error
	WebhookEndpoints(ctx context.Context, tenant string) ([]Endpoint, error)
	DeleteWebhookEndpoint(ctx context.Context, tenant, id string) error
	WebhookMessages(ctx context.Context, tenant, status string, limit int) ([]Listed, error)
	ReplayWebhookMessage(ctx context.Context, tenant string, id int64) error
}

// Admin manages a tenant's endpoints and its dead letters.
type Admin struct {
	Store AdminStore
	// AllowPrivate accepts endpoints on loopback and private networks over
	// plain http (development and tests); otherwise an endpoint is https
	// and the dispatcher refuses non-public addresses when it connects.
	AllowPrivate bool
}

var endpointID = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// Create checks and stores an endpoint and returns its signing secret
// (whsec_ and 32 random bytes in base64), which is not shown again.
func (a *Admin) Create(ctx context.Context, e Endpoint) (string, error) {
	if !endpointID.MatchString(e.ID) {
		return "", fault.New(fault.Invalid, "id: 1-64 lower-case letters, digits, '.', '_' or '-'")
	}
	u, err := url.Parse(e.URL)
	switch {
	case err != nil || u.Host == "" || u.User != nil || u.Fragment != "" || len(e.URL) > 2000:
		return "", fault.New(fault.Invalid, "url: an absolute https URL without credentials or fragment")
	case u.Scheme == "https":
	case u.Scheme == "http" && a.AllowPrivate && isLocal(u.Hostname()):
	default:
		return "", fault.New(fault.Invalid, "url: must be https")
	}
	if err := CheckTypes(e.EventTypes); err != nil {
		return "", fault.New(fault.Invalid, "event_types: "+err.Error())
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := a.Store.CreateWebhookEndpoint(ctx, e, key); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key), nil
}

func isLocal(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsPrivate())
}

// List lists a tenant's endpoints.
func (a *Admin) List(ctx context.Context, tenant string) ([]Endpoint, error) {
	return a.Store.WebhookEndpoints(ctx, tenant)
}

// Delete removes an endpoint and its messages.
func (a *Admin) Delete(ctx context.Context, tenant, id string) error {
	return a.Store.DeleteWebhookEndpoint(ctx, tenant, id)
}

// Messages lists a tenant's messages in a status, newest first.
func (a *Admin) Messages(ctx context.Context, tenant, status string, limit int) ([]Listed, error) {
	switch status {
	case StatusPending, StatusDelivered, StatusDead:
	default:
		return nil, fault.New(fault.Invalid, "status: pending, delivered or dead")
	}
	return a.Store.WebhookMessages(ctx, tenant, status, limit)
}

// Replay sends a dead or delivered message again, from the first attempt.
func (a *Admin) Replay(ctx context.Context, tenant string, id int64) error {
	return a.Store.ReplayWebhookMessage(ctx, tenant, id)
}
