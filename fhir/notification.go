package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Sentinel errors callers branch on.
var (
	// ErrNotNotification: the body is JSON but not a notification Bundle
	// (not a Bundle, not of type history, or its first entry is not a
	// subscription status).
	ErrNotNotification = errors.New("fhir: not a subscription notification bundle")
	// ErrMalformed: the body is not valid JSON, breaks a size or nesting
	// limit, or is structurally broken. Errors wrapping it name the field
	// or position, never a value.
	ErrMalformed = errors.New("fhir: malformed FHIR content")
	// ErrNoFocus: WrapResources found no ExplanationOfBenefit or
	// Appointment to wrap.
	ErrNoFocus = errors.New("fhir: no ExplanationOfBenefit or Appointment to wrap")
	// ErrAlreadyNotification: WrapResources was given a notification
	// Bundle; parse it with ParseNotification instead.
	ErrAlreadyNotification = errors.New("fhir: body is already a notification bundle")
)

// NotificationType is the status type of a notification Bundle.
type NotificationType string

// The notification types of the Subscriptions Backport IG.
const (
	TypeHandshake         NotificationType = "handshake"
	TypeHeartbeat         NotificationType = "heartbeat"
	TypeEventNotification NotificationType = "event-notification"
	TypeQueryStatus       NotificationType = "query-status"
	TypeQueryEvent        NotificationType = "query-event"
)

// Content is how much of each focus resource a notification carries.
type Content string

// The payload content levels of the Subscriptions Backport IG.
const (
	ContentEmpty        Content = "empty"
	ContentIDOnly       Content = "id-only"
	ContentFullResource Content = "full-resource"
)

// Notification is a parsed notification Bundle.
type Notification struct {
	Type             NotificationType
	Subscription     string // the status's subscription reference, as sent
	Topic            string
	Status           string
	EventsSinceStart int64 // -1 when absent
	// Content is derived from the Bundle, not from the subscription:
	// full-resource when a focus resource is present, id-only when only
	// focus references are, empty otherwise.
	Content Content
	Events  []Event
}

// LogValue logs the notification's shape only: no references or resources.
func (n Notification) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("type", string(n.Type)),
		slog.String("status", n.Status),
		slog.String("content", string(n.Content)),
		slog.Int64("events_since_start", n.EventsSinceStart),
		slog.Int("events", len(n.Events)),
	)
}

// Event is one notification-event of a notification.
type Event struct {
	EventNumber int64  // -1 when absent
	Timestamp   string // as sent (valueInstant, valueDateTime or valueDate)
	// FocusRef is the focus reference as sent: an absolute URL, "Type/id"
	// or a urn:uuid.
	FocusRef     string
	ResourceType string
	ID           string
	// VersionID is meta.versionId of the focus resource when it is in the
	// Bundle, else the reference's _history part, else "".
	VersionID string
	// Focus is the focus resource exactly as in the Bundle; nil unless the
	// Bundle carries it.
	Focus json.RawMessage
	// Related holds the resources of the Bundle that the focus (or the
	// event's additional-context) references, directly or through one
	// further reference, limited to parties, places and coverage (Patient,
	// RelatedPerson, Organization, Practitioner, PractitionerRole, Location,
	// HealthcareService, Coverage, InsurancePlan). Clinical resources are
	// never included. Each is exactly as in the Bundle.
	Related []json.RawMessage
	// RelatedURLs holds the fullUrl each Related resource had in the
	// Bundle ("" when none), index-aligned with Related. Event.EOBFacts and
	// Event.PatientContact use it so that a urn:uuid reference resolves
	// even when the uuid is not the resource's id.
	RelatedURLs []string
	// Guarded says Focus passed the JSON guard (size, depth, duplicate
	// keys) where it entered Tidings: a notification's whole body, or a
	// resource read from a FHIR server (CheckResource). Readers of the
	// focus (EOBFacts) then do not check it again. Only code that ran the
	// guard on these very bytes, or that reads them back from storage
	// which authenticates them, sets it.
	Guarded bool
}

// LogValue logs the event without identifiers or resources.
func (e Event) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int64("event_number", e.EventNumber),
		slog.String("resource_type", e.ResourceType),
		slog.Bool("full_resource", e.Focus != nil),
		slog.Int("related", len(e.Related)),
	)
}

// bundleEnvelope is the part of a Bundle the parser reads. Entries stay raw
// so that an odd entry cannot fail the whole Bundle before we look at it.
type bundleEnvelope struct {
	ResourceType string `json:"resourceType"`
	Meta         *struct {
		Profile []string `json:"profile"`
	} `json:"meta"`
	Type  string            `json:"type"`
	Entry []json.RawMessage `json:"entry"`
}

// claimsProfile reports whether the Bundle declares the profile (with or
// without a |version suffix) in meta.profile.
func (env bundleEnvelope) claimsProfile(profile string) bool {
	if env.Meta == nil {
		return false
	}
	for _, p := range env.Meta.Profile {
		if p == profile || strings.HasPrefix(p, profile+"|") {
			return true
		}
	}
	return false
}

// bundleEntry is one entry of a Bundle, the subset we read.
type bundleEntry struct {
	FullURL  string          `json:"fullUrl"`
	Resource json.RawMessage `json:"resource"`
	Request  json.RawMessage `json:"request"`
	Response json.RawMessage `json:"response"`
}

// hasResource reports whether the entry carries a resource object.
func (e bundleEntry) hasResource() bool {
	return len(e.Resource) > 0 && string(e.Resource) != "null"
}

// decodeBundle checks body and reads its envelope and entries. It does not
// judge whether the Bundle is a notification.
func decodeBundle(body []byte) (bundleEnvelope, []bundleEntry, error) {
	var env bundleEnvelope
	if err := checkJSON(body, "body"); err != nil {
		return env, nil, err
	}
	if t := firstNonSpace(body); t != '{' {
		return env, nil, fmt.Errorf("%w: body is not a JSON object", ErrNotNotification)
	}
	// Most bodies are Bundles of the shape wanted: walk their members
	// (scanBundle), else read envelope and entries at once (each
	// json.Unmarshal reads the whole body twice).
	// Anything else takes the careful way below, entry by entry, whose
	// errors say where the shape is wrong.
	if env, entries, ok := scanBundle(body); ok {
		return env, entries, nil
	}
	if env, entries, ok := decodeBundleAtOnce(body); ok {
		return env, entries, nil
	}
	// Read resourceType alone first: other resources use "type" and
	// "entry" for other shapes.
	var head resourceHead
	if err := json.Unmarshal(body, &head); err != nil {
		return env, nil, decodeError("body", err)
	}
	if head.ResourceType != "Bundle" {
		env.ResourceType = head.ResourceType
		return env, nil, nil
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return env, nil, decodeError("Bundle", err)
	}
	if len(env.Entry) > MaxEntries {
		return env, nil, fmt.Errorf("%w: Bundle has more than %d entries", ErrMalformed, MaxEntries)
	}
	entries := make([]bundleEntry, len(env.Entry))
	for i, raw := range env.Entry {
		if err := json.Unmarshal(raw, &entries[i]); err != nil {
			return env, nil, decodeError(fmt.Sprintf("entry[%d]", i), err)
		}
		if entries[i].hasResource() && firstNonSpace(entries[i].Resource) != '{' {
			return env, nil, fmt.Errorf("%w: entry[%d].resource is not an object", ErrMalformed, i)
		}
	}
	return env, entries, nil
}

// decodeBundleAtOnce reads a Bundle's envelope and entries in one decode;
// ok is false for anything that is not plainly a Bundle of entries within
// the limits with object resources.
func decodeBundleAtOnce(body []byte) (bundleEnvelope, []bundleEntry, bool) {
	var b struct {
		ResourceType string `json:"resourceType"`
		Meta         *struct {
			Profile []string `json:"profile"`
		} `json:"meta"`
		Type  string        `json:"type"`
		Entry []bundleEntry `json:"entry"`
	}
	if json.Unmarshal(body, &b) != nil || b.ResourceType != "Bundle" || len(b.Entry) > MaxEntries {
		return bundleEnvelope{}, nil, false
	}
	for _, e := range b.Entry {
		if e.hasResource() && firstNonSpace(e.Resource) != '{' {
			return bundleEnvelope{}, nil, false
		}
	}
	env := bundleEnvelope{ResourceType: b.ResourceType, Meta: b.Meta, Type: b.Type} // its raw entries are not needed
	return env, b.Entry, true
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

// readStatus reads the subscription status in the first entry. It returns
// ErrNotNotification when that entry is no status at all.
func readStatus(env bundleEnvelope, entries []bundleEntry) (subscriptionStatus, error) {
	if env.ResourceType != "Bundle" {
		return subscriptionStatus{}, fmt.Errorf("%w: resourceType is not Bundle", ErrNotNotification)
	}
	if env.Type != "history" && env.Type != "subscription-notification" {
		return subscriptionStatus{}, fmt.Errorf("%w: Bundle.type is not history", ErrNotNotification)
	}
	if len(entries) == 0 || !entries[0].hasResource() {
		return subscriptionStatus{}, fmt.Errorf("%w: Bundle has no status as its first entry", ErrNotNotification)
	}
	head, err := readHead(entries[0].Resource)
	if err != nil {
		return subscriptionStatus{}, decodeError("entry[0].resource", err)
	}
	switch {
	case head.ResourceType == "SubscriptionStatus":
		return parseStatusResource(entries[0].Resource, "entry[0].resource")
	case head.ResourceType == "Parameters":
		// A status parses only with a subscription parameter, which is
		// enough for looksLikeStatus: ask it only to tell a broken status
		// (its parse error) from a Parameters that is none.
		st, err := parseStatusParameters(entries[0].Resource, "entry[0].resource")
		if err == nil || looksLikeStatus(entries[0].Resource) {
			return st, err
		}
	}
	return subscriptionStatus{}, fmt.Errorf("%w: first entry is not a subscription status", ErrNotNotification)
}

// checkHistoryEntries enforces, on a history Bundle that declares the
// Backport R4 notification profile, what FHIR R4 requires of every history
// entry (invariants bdl-3 and bdl-4): a request with method and url and a
// response with status. The Subscriptions test kit (Inferno) fails such a
// Bundle without them.
//
// A history Bundle that does not declare the profile is not held to this:
// HAPI FHIR's R4 backport notifications (SubscriptionTopicPayloadBuilder)
// declare no Bundle profile, send the status entry with neither request nor
// response, and the focus entries with a request but no response; refusing
// them would refuse the most common server. R5 subscription-notification
// Bundles need neither.
func checkHistoryEntries(env bundleEnvelope, entries []bundleEntry) error {
	if env.Type != "history" || !env.claimsProfile(backportNotificationProfile) {
		return nil
	}
	for i, e := range entries {
		var req struct {
			Method *string `json:"method"`
			URL    *string `json:"url"`
		}
		if len(e.Request) == 0 || string(e.Request) == "null" {
			return fmt.Errorf("%w: entry[%d] has no request, which every entry of a history Bundle (backport-subscription-notification-r4) must carry", ErrMalformed, i)
		}
		if json.Unmarshal(e.Request, &req) != nil || req.Method == nil || *req.Method == "" || req.URL == nil || *req.URL == "" {
			return fmt.Errorf("%w: entry[%d].request lacks a method or url string", ErrMalformed, i)
		}
		var resp struct {
			Status *string `json:"status"`
		}
		if len(e.Response) == 0 || string(e.Response) == "null" {
			return fmt.Errorf("%w: entry[%d] has no response, which every entry of a history Bundle (backport-subscription-notification-r4) must carry", ErrMalformed, i)
		}
		if json.Unmarshal(e.Response, &resp) != nil || resp.Status == nil || *resp.Status == "" {
			return fmt.Errorf("%w: entry[%d].response lacks a status string", ErrMalformed, i)
		}
	}
	return nil
}

// indexEntries indexes every entry that carries a resource (except the
// first when skipFirst, the status). It rejects two entries that claim the
// same fullUrl and version.
func indexEntries(entries []bundleEntry, skipFirst bool) (*resourceIndex, []int, error) {
	ix := newResourceIndex()
	pos := make([]int, len(entries)) // entry index → index position, -1 if none
	type urlVersion struct{ url, version string }
	seen := make(map[urlVersion]bool)
	for i, e := range entries {
		pos[i] = -1
		if (skipFirst && i == 0) || !e.hasResource() {
			continue
		}
		head, err := readHead(e.Resource)
		if err != nil {
			return nil, nil, decodeError(fmt.Sprintf("entry[%d].resource", i), err)
		}
		if head.ResourceType == "" {
			return nil, nil, fmt.Errorf("%w: entry[%d].resource has no resourceType", ErrMalformed, i)
		}
		if e.FullURL != "" {
			k := urlVersion{e.FullURL, head.versionID()}
			if seen[k] {
				return nil, nil, fmt.Errorf("%w: entry[%d] repeats the fullUrl and version of an earlier entry", ErrMalformed, i)
			}
			seen[k] = true
		}
		pos[i] = ix.add(e.FullURL, e.Resource, head)
	}
	return ix, pos, nil
}

// ParseNotification parses a notification Bundle: a Backport R4 history
// Bundle whose first entry is a backport-subscription-status-r4 Parameters,
// or one (history or subscription-notification) whose first entry is an
// R4B/R5 SubscriptionStatus. Focus resources are looked up among the other
// entries by fullUrl, "Type/id" and urn:uuid.
//
// A history Bundle that declares the backport-subscription-notification-r4
// profile must carry request and response on every entry, as FHIR requires
// of history Bundles; without them it is refused as ErrMalformed, naming
// the entry (see checkHistoryEntries for why this is tied to the profile).
func ParseNotification(body []byte) (*Notification, error) {
	env, entries, err := decodeBundle(body)
	if err != nil {
		return nil, err
	}
	st, err := readStatus(env, entries)
	if err != nil {
		return nil, err
	}
	if err := checkHistoryEntries(env, entries); err != nil {
		return nil, err
	}
	ix, _, err := indexEntries(entries, true)
	if err != nil {
		return nil, err
	}
	n := &Notification{
		Type:             st.typ,
		Subscription:     st.subscription,
		Topic:            st.topic,
		Status:           st.status,
		EventsSinceStart: st.eventsSinceStart,
		Content:          ContentEmpty,
	}
	for _, se := range st.events {
		ev := Event{EventNumber: se.number, Timestamp: se.timestamp, FocusRef: se.focus}
		if se.focus != "" {
			p := parseReference(se.focus)
			ev.ResourceType, ev.ID, ev.VersionID = p.Type, p.ID, p.Version
			if p.Kind == refURN || p.Kind == refContained {
				ev.ID = ""
			}
			if n.Content == ContentEmpty {
				n.Content = ContentIDOnly
			}
			if i, ok := ix.resolve(se.focus); ok {
				it := ix.items[i]
				ev.ResourceType, ev.ID = it.head.ResourceType, it.head.ID
				if v := it.head.versionID(); v != "" {
					ev.VersionID = v
				}
				ev.Focus, ev.Guarded = it.raw, true // decodeBundle checked the whole body
				n.Content = ContentFullResource
				for _, r := range ix.related(i, se.additional) {
					ev.Related = append(ev.Related, ix.items[r].raw)
					ev.RelatedURLs = append(ev.RelatedURLs, ix.items[r].fullURL)
				}
			}
		}
		n.Events = append(n.Events, ev)
	}
	return n, nil
}
