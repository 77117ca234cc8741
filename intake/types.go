package intake

import (
	"log/slog"
	"time"

	"github.com/tidings-health/tidings/fhir"
)

// Subscription is one FHIR subscription that notifies Tidings, as intake
// works on it. store.Store converts its row to this.
type Subscription struct {
	ID        string
	TenantID  string
	Topic     string
	Status    string // requested, active, error, off
	SourceID  string // the FHIR source Tidings fetches from; "" when none
	Criteria  string
	RemoteRef string // the Subscription's own reference on its server
	SourceURL string // informational: where the notifications come from
	CreatedAt time.Time
	// HeartbeatPeriod is how often the server promised a heartbeat; 0: none.
	HeartbeatPeriod time.Duration
	// SigningKey, when set, is the HMAC key the server signs notifications
	// with (opened from its sealed column; never logged).
	SigningKey []byte
}

// LogValue keeps the signing key out of logs.
func (s Subscription) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", s.ID), slog.String("tenant", s.TenantID), slog.String("status", s.Status))
}

// Subscription statuses.
const (
	StatusRequested = "requested"
	StatusActive    = "active"
	StatusOff       = "off"
)

// Source is a FHIR server Tidings fetches from. Its credential (a bearer
// token or a private key) travels separately and is sealed at rest.
type Source struct {
	ID       string
	TenantID string
	BaseURL  string
	AuthType string // none, bearer, smart-backend
	TokenURL string
	ClientID string
	KeyID    string
	Scopes   string
}

// NewEvent is an event as intake hands it to storage: the focus resource
// and what came with it, sealed before it reaches a column.
type NewEvent struct {
	TenantID       string
	SubscriptionID string
	ResourceType   string
	ResourceID     string
	VersionID      string
	EventNumber    *int64
	DedupeKey      string
	Record         fhir.Event
}

// StoredEvent says where an accepted event went.
type StoredEvent struct {
	EventID   int64
	OutboxID  int64
	Duplicate bool
}

// Fetch kinds and statuses.
const (
	FetchRead    = "read"
	FetchSearch  = "search"
	FetchPending = "pending"
	FetchDone    = "done"
	FetchFailed  = "failed"
)

// NewFetch is something to fetch before it can become an event.
type NewFetch struct {
	TenantID       string
	SubscriptionID string
	Kind           string // FetchRead or FetchSearch
	Reference      string
	EventNumber    *int64
	DedupeKey      string
}

// StoredFetch says where an accepted fetch went.
type StoredFetch struct {
	FetchID   int64
	OutboxID  int64
	Duplicate bool
}

// Fetch is a stored fetch.
type Fetch struct {
	ID             int64
	TenantID       string
	SubscriptionID string
	Kind           string
	Reference      string
	EventNumber    *int64
	Status         string
}

// Gap is a run of event numbers a subscription announced but never delivered.
type Gap struct {
	ID             int64
	TenantID       string
	SubscriptionID string
	FromNumber     int64
	ToNumber       int64
}

// SubscriptionReport is a subscription's state for operators (no secrets).
type SubscriptionReport struct {
	ID               string
	TenantID         string
	Status           string
	SourceID         string
	RemoteRef        string
	Topic            string
	LastHandshakeAt  *time.Time
	LastHeartbeatAt  *time.Time
	Heartbeats       int64
	HeartbeatPeriod  time.Duration
	SilentSince      *time.Time
	EventsSinceStart int64
	LastEventNumber  *int64
	Events           int64
	GapsOpen         int64
	GapsRecovered    int64
}

// Task types of the outbox: what the queue is asked to do with a row.
const (
	TaskProcessEvent = "event:process" // turn an event into workflow runs
	TaskFetch        = "fetch:process" // fetch what a notification did not carry
)

// OutboxItem is a stored event or fetch to hand to the queue.
type OutboxItem struct {
	ID       int64
	TenantID string
	TaskType string
	EventID  *int64 // exactly one of EventID and FetchID is set
	FetchID  *int64
}
