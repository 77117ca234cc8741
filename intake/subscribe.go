package intake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/fhir/client"
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
	CreateSubscription(ctx context.Context, sub Subscription, secret string) error
	SetRemoteRef(ctx context.Context, tenantID, subscriptionID, ref string) error
	DeleteSubscription(ctx context.Context, tenantID, subscriptionID string) error
}

// NewSubscription is what a caller asks Tidings to subscribe to.
type NewSubscription struct {
	ID              string
	TenantID        string
	SourceID        string
	Topic           string        // SubscriptionTopic canonical
	Criteria        string        // backport filter criteria, e.g. ExplanationOfBenefit?patient=...
	Payload         string        // full-resource (default), id-only or empty
	HeartbeatPeriod time.Duration // 0: none
}

// Subscriber registers subscriptions and creates them on their FHIR source.
type Subscriber struct {
	Store   SubscribeStore
	Sources CreatorSources
	// NotifyBaseURL is where FHIR servers reach Tidings' API, e.g.
	// https://tidings.example.org; the channel endpoint is NotifyURL's.
	NotifyBaseURL string
}

// Subscribe stores the subscription with a fresh secret and creates the
// matching Backport Subscription (rest-hook, secret in channel.header) on the
// source. The subscription stays "requested" until the server's handshake.
func (s *Subscriber) Subscribe(ctx context.Context, req NewSubscription, secret string) (remoteRef string, err error) {
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
		return "", fault.New(fault.Invalid, "invalid subscription: "+strings.Join(problems, "; "))
	}
	creator, base, err := s.Sources.Creator(ctx, req.TenantID, req.SourceID)
	if err != nil {
		return "", err
	}
	if err := s.Store.CreateSubscription(ctx, Subscription{ID: req.ID, TenantID: req.TenantID, Topic: req.Topic,
		SourceID: req.SourceID, Criteria: req.Criteria, Status: StatusRequested, HeartbeatPeriod: req.HeartbeatPeriod}, secret); err != nil {
		return "", err
	}
	body, err := json.Marshal(s.backportSubscription(req, secret))
	if err != nil {
		return "", err
	}
	created, err := creator.Create(ctx, "Subscription", body)
	if err != nil {
		// Keep nothing the server does not know about: a retry starts afresh.
		if derr := s.Store.DeleteSubscription(context.WithoutCancel(ctx), req.TenantID, req.ID); derr != nil {
			err = errors.Join(err, derr)
		}
		// The upstream detail stays in the server log (the caller's error is
		// generic), so the API cannot be used to probe other hosts.
		return "", fault.Wrap(fmt.Errorf("create the Subscription on source %s: %w", req.SourceID, err), fault.Upstream,
			"the FHIR source did not create the Subscription; nothing was kept, try again")
	}
	var got struct{ ID string }
	if len(created) > 0 && json.Unmarshal(created, &got) == nil && fhirID.MatchString(got.ID) {
		remoteRef = strings.TrimRight(base, "/") + "/Subscription/" + got.ID
		if err := s.Store.SetRemoteRef(ctx, req.TenantID, req.ID, remoteRef); err != nil {
			return "", err
		}
	}
	return remoteRef, nil
}

// NotifyURL is where a tenant's subscription notifies Tidings:
// {base}/fhir/r4/notify/{tenant}/{subscription}. Subscription ids are per
// tenant, so the URL names both (the tenant is path-escaped).
func NotifyURL(base, tenantID, subscriptionID string) string {
	return strings.TrimRight(base, "/") + "/fhir/r4/notify/" + url.PathEscape(tenantID) + "/" + subscriptionID
}

func (s *Subscriber) backportSubscription(req NewSubscription, secret string) map[string]any {
	channel := map[string]any{
		"type":     "rest-hook",
		"endpoint": NotifyURL(s.NotifyBaseURL, req.TenantID, req.ID),
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

// ValidateSource checks a source's settings and credential, all problems at once.
func ValidateSource(src Source, cred []byte) []string {
	var p []string
	if !fhirID.MatchString(src.ID) {
		p = append(p, "id: 1-64 of A-Z a-z 0-9 - .")
	}
	if _, err := client.New(client.Options{BaseURL: src.BaseURL}); err != nil {
		p = append(p, "base_url: "+err.Error())
	}
	switch src.AuthType {
	case "none":
	case "bearer":
		if len(strings.TrimSpace(string(cred))) == 0 {
			p = append(p, "bearer: the token is empty")
		}
	case "smart-backend":
		if _, err := client.ParsePrivateKeyPEM(cred); err != nil {
			p = append(p, "smart-backend: private key: "+err.Error())
		}
		if src.ClientID == "" {
			p = append(p, "smart-backend: client_id is required")
		}
		if src.KeyID == "" {
			p = append(p, "smart-backend: key_id (the key's kid in the client's JWK Set) is required")
		}
		if _, err := client.New(client.Options{BaseURL: src.TokenURL}); err != nil {
			p = append(p, "smart-backend: token_url must be an https URL (http only on loopback)")
		}
	default:
		p = append(p, "auth.type: none, bearer or smart-backend")
	}
	return p
}
