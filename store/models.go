package store

import (
	"encoding/json"
	"time"
)

// Tenant is a customer (a health plan, a provider organisation).
type Tenant struct {
	ID        string `gorm:"primaryKey"`
	Name      string
	CreatedAt time.Time
}

// Subscription is one FHIR subscription that notifies Tidings.
type Subscription struct {
	ID               string `gorm:"primaryKey"`
	TenantID         string `gorm:"primaryKey"`
	SecretHash       []byte
	Topic            string
	SourceURL        string
	Status           string
	LastHandshakeAt  *time.Time
	LastHeartbeatAt  *time.Time
	Heartbeats       int64
	EventsSinceStart int64
	CreatedAt        time.Time
	SourceID         *string
	Criteria         string
	HeartbeatPeriodS int `gorm:"column:heartbeat_period_s"`
	SilentSince      *time.Time
	RemoteRef        string
	HMACKeySealed    []byte `gorm:"column:hmac_key_sealed"`
}

// Source is a FHIR server Tidings fetches from; its credential is sealed.
type Source struct {
	ID               string `gorm:"primaryKey"`
	TenantID         string `gorm:"primaryKey"`
	BaseURL          string
	AuthType         string
	TokenURL         string
	ClientID         string
	KeyID            string
	Scopes           string
	CredentialSealed []byte
	CreatedAt        time.Time
}

func (Source) TableName() string { return "fhir_sources" }

// Fetch is something to fetch before it can become an event.
type Fetch struct {
	ID             int64 `gorm:"primaryKey"`
	TenantID       string
	SubscriptionID string
	Kind           string
	Reference      string
	EventNumber    *int64
	DedupeKey      string
	Status         string
	EventsCreated  int
	LastError      string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Gap is a run of event numbers a subscription announced but never delivered.
type Gap struct {
	ID              int64 `gorm:"primaryKey"`
	TenantID        string
	SubscriptionID  string
	FromNumber      int64
	ToNumber        int64
	DetectedAt      time.Time
	RecoveredAt     *time.Time
	Method          string
	RecoveredEvents int
	LastError       string
	Attempts        int
	NextAttemptAt   time.Time
	AbandonedAt     *time.Time
}

func (Gap) TableName() string { return "subscription_gaps" }

// Event is one stored FHIR notification event (the inbox).
type Event struct {
	ID             int64 `gorm:"primaryKey"`
	TenantID       string
	SubscriptionID string
	ResourceType   string
	ResourceID     string
	VersionID      string
	EventNumber    *int64
	DedupeKey      string
	ResourceSealed []byte
	ReceivedAt     time.Time
	Kind           string
}

// OutboxRow is a task waiting to be handed to the queue.
type OutboxRow struct {
	ID         int64 `gorm:"primaryKey"`
	TenantID   string
	TaskType   string
	EventID    *int64 // exactly one of EventID and FetchID is set
	FetchID    *int64
	EnqueuedAt *time.Time
	Attempts   int
	LastError  string
	CreatedAt  time.Time
}

func (OutboxRow) TableName() string { return "outbox" }

// Contact is how to reach a patient; the email is sealed.
type Contact struct {
	ID           int64 `gorm:"primaryKey"`
	TenantID     string
	PatientIndex string
	EmailSealed  []byte
	Language     string
	TimeZone     string
	Source       string
	UpdatedAt    time.Time

	OptedOutChannels        string
	ConfidentialEmailSealed []byte
	Restrictions            string
	MarketingAuthorized     bool
	AlternateFormat         string
	// EncryptionKeySealed is the patient's S/MIME certificate or OpenPGP
	// key, sealed (it names the patient); EncryptionKeyKind which of the two.
	EncryptionKeySealed []byte
	EncryptionKeyKind   string
	// EmailHardBounces counts permanent bounces of the row's recipient;
	// EmailSuppressedAt is set once they reach the suppression threshold
	// (migration 30). Registering the contact through the API clears both.
	EmailHardBounces  int
	EmailSuppressedAt *time.Time
	// FHIRSource is the source whose bundle gave a FHIR contact; "" for the
	// API's.
	FHIRSource string `gorm:"column:fhir_source"`
	// PhoneSealed is the phone number for SMS (E.164), sealed; PhoneIndex
	// its blind index, by which an inbound STOP finds it.
	PhoneSealed []byte
	PhoneIndex  string
}

// Notice is one notice built for one event.
type Notice struct {
	ID            int64 `gorm:"primaryKey"`
	TenantID      string
	EventID       int64
	NoticeType    string
	Status        string
	Reasons       json.RawMessage `gorm:"type:jsonb"`
	PayloadSealed []byte
	PortalToken   string
	RunID         *int64 // set for a workflow's notice: one per (run, step)
	Step          *string
	Template      string
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Delivery is one attempt series of a notice on one channel.
type Delivery struct {
	ID        int64 `gorm:"primaryKey"`
	TenantID  string
	NoticeID  int64
	Channel   string
	Status    string
	Attempts  int
	TLS       bool `gorm:"column:tls"`
	MessageID string
	Error     string
	CreatedAt time.Time
	UpdatedAt time.Time
	// DisclosureSealed is what the attempt discloses (see sealDisclosure).
	DisclosureSealed []byte
}

// PolicyDecision records one policy evaluation; the input is kept only as a hash.
type PolicyDecision struct {
	ID             int64 `gorm:"primaryKey"`
	TenantID       string
	NoticeID       int64
	Channel        string
	PolicyRevision string
	InputHash      string
	Allow          bool
	Reasons        json.RawMessage `gorm:"type:jsonb"`
	Redact         json.RawMessage `gorm:"type:jsonb"`
	Obligations    json.RawMessage `gorm:"type:jsonb"`
	LatencyUS      int64           `gorm:"column:latency_us"`
	CreatedAt      time.Time
}
