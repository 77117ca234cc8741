package intake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tidings-health/tidings/store"
)

// Backport IG extension URLs used on the Subscription Tidings creates.
const (
	backportProfile   = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
	extFilterCriteria = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria"
	extHeartbeat      = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period"
	extPayloadContent = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
)

// FHIRCreator creates resources on a FHIR server; *client.Client is the real one.
type FHIRCreator interface {
	Create(ctx context.Context, resourceType string, resource json.RawMessage) (json.RawMessage, error)
}

// CreatorSources gives the creator for a registered FHIR source.
type CreatorSources interface {
	Creator(ctx context.Context, tenantID, sourceID string) (FHIRCreator, string, error) // and the source's base URL; ErrNotFound for another tenant's
}

// SubscribeStore is what creating subscriptions needs from storage.
type SubscribeStore interface {
	CreateSubscription(ctx context.Context, sub store.Subscription, secret string) error
	SetRemoteRef(ctx context.Context, subscriptionID, ref string) error
	DeleteSubscription(ctx context.Context, subscriptionID string) error
}

// Subscription is what a caller asks Tidings to subscribe to.
type Subscription struct {
	ID              string
	TenantID        string
	SourceID        string
	Topic           string        // SubscriptionTopic canonical
	Criteria        string        // backport filter criteria, e.g. ExplanationOfBenefit?patient=...
	Payload         string        // full-resource (default), id-only or empty
	HeartbeatPeriod time.Duration // 0: none
}

// ErrInvalidSubscription means the request cannot become a Subscription.
var ErrInvalidSubscription = errors.New("invalid subscription")

// Subscriber registers subscriptions and creates them on their FHIR source.
type Subscriber struct {
	Store   SubscribeStore
	Sources CreatorSources
	// NotifyBaseURL is where FHIR servers reach Tidings' API, e.g.
	// https://tidings.example.org; the channel endpoint is
	// {NotifyBaseURL}/fhir/r4/notify/{id}.
	NotifyBaseURL string
}

// Subscribe stores the subscription with a fresh secret and creates the
// matching Backport Subscription (rest-hook, secret in channel.header) on the
// source. The subscription stays "requested" until the server's handshake.
func (s *Subscriber) Subscribe(ctx context.Context, req Subscription, secret string) (remoteRef string, err error) {
	var problems []string
	if !fhirID.MatchString(req.ID) {
		problems = append(problems, "id must be 1-64 of A-Z a-z 0-9 - .")
	}
	if req.SourceID == "" {
		problems = append(problems, "source_id is required")
	}
	if req.Topic == "" {
		problems = append(problems, "topic (a SubscriptionTopic canonical URL) is required")
	}
	switch req.Payload {
	case "":
		req.Payload = "full-resource"
	case "full-resource", "id-only", "empty":
	default:
		problems = append(problems, "payload must be full-resource, id-only or empty")
	}
	if req.Criteria != "" {
		if _, _, err := criteria(req.Criteria); err != nil {
			problems = append(problems, "criteria must be Type?param=value&...")
		}
	}
	if s.NotifyBaseURL == "" {
		problems = append(problems, "Tidings does not know its own API address (TIDINGS_API_BASE_URL), so it cannot tell the FHIR server where to notify")
	}
	if len(problems) > 0 {
		return "", fmt.Errorf("%w: %s", ErrInvalidSubscription, strings.Join(problems, "; "))
	}
	creator, base, err := s.Sources.Creator(ctx, req.TenantID, req.SourceID)
	if err != nil {
		return "", err
	}
	sourceID := req.SourceID
	if err := s.Store.CreateSubscription(ctx, store.Subscription{ID: req.ID, TenantID: req.TenantID, Topic: req.Topic,
		SourceID: &sourceID, Criteria: req.Criteria, Status: "requested",
		HeartbeatPeriodS: int(req.HeartbeatPeriod / time.Second)}, secret); err != nil {
		return "", err
	}
	body, err := json.Marshal(s.backportSubscription(req, secret))
	if err != nil {
		return "", err
	}
	created, err := creator.Create(ctx, "Subscription", body)
	if err != nil {
		// Keep nothing the server does not know about: a retry starts afresh.
		if derr := s.Store.DeleteSubscription(context.WithoutCancel(ctx), req.ID); derr != nil {
			err = errors.Join(err, derr)
		}
		return "", fmt.Errorf("create the Subscription on source %s: %w", req.SourceID, err)
	}
	var got struct{ ID string }
	if len(created) > 0 && json.Unmarshal(created, &got) == nil && fhirID.MatchString(got.ID) {
		remoteRef = strings.TrimRight(base, "/") + "/Subscription/" + got.ID
		if err := s.Store.SetRemoteRef(ctx, req.ID, remoteRef); err != nil {
			return "", err
		}
	}
	return remoteRef, nil
}

func (s *Subscriber) backportSubscription(req Subscription, secret string) map[string]any {
	channel := map[string]any{
		"type":     "rest-hook",
		"endpoint": strings.TrimRight(s.NotifyBaseURL, "/") + "/fhir/r4/notify/" + req.ID,
		"payload":  "application/fhir+json",
		"_payload": map[string]any{"extension": []any{map[string]any{"url": extPayloadContent, "valueCode": req.Payload}}},
		"header":   []string{"Authorization: Bearer " + secret},
	}
	if req.HeartbeatPeriod > 0 {
		channel["extension"] = []any{map[string]any{"url": extHeartbeat, "valueUnsignedInt": int(req.HeartbeatPeriod / time.Second)}}
	}
	sub := map[string]any{
		"resourceType": "Subscription",
		"meta":         map[string]any{"profile": []string{backportProfile}},
		"status":       "requested",
		"reason":       "Patient notices by Tidings",
		"criteria":     req.Topic,
		"channel":      channel,
	}
	if req.Criteria != "" {
		sub["_criteria"] = map[string]any{"extension": []any{map[string]any{"url": extFilterCriteria, "valueString": req.Criteria}}}
	}
	return sub
}
