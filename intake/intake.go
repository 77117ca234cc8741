package intake

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/fhir"
)

// ErrInactive means the subscription is off (its server said so, or an operator).
var ErrInactive = fault.New(fault.Forbidden, "the subscription is not active in Tidings")

// ErrUnknownSubscription means no subscription has that id in the tenant,
// or, asked without a tenant, that not exactly one tenant has it (from
// Store; Authenticate answers it as ErrWrongSecret).
var ErrUnknownSubscription = fault.New(fault.NotFound, "unknown subscription")

// ErrWrongSecret means the secret presented is not the subscription's, or
// no subscription has that id (or, without a tenant, several tenants have
// it): these answer alike, so the notify URL does not tell a guesser which
// subscription ids exist, in its tenant or any other.
var ErrWrongSecret = fault.New(fault.Unauthorized, "unknown subscription or wrong secret")

// unknownSecretHash stands in for the stored hash of a subscription that
// does not exist, so that checking a secret against it costs what checking
// a real one does. It matches no secret.
var unknownSecretHash = SecretHash(rand.Text())

// Store is what intake needs from storage.
type Store interface {
	// SubscriptionSecret loads a tenant's subscription with the hash of its
	// secret (SecretHash), or ErrUnknownSubscription. tenantID "" finds the
	// subscription only while one tenant alone has that id (the notify URL
	// without a tenant); an id several tenants share is unknown.
	SubscriptionSecret(ctx context.Context, tenantID, subscriptionID string) (Subscription, []byte, error)
	RecordStatus(ctx context.Context, tenantID, subscriptionID, kind, remoteStatus string, eventsSinceStart int64, at time.Time) error
	// InsertEvents stores events (deduplicated) where workers claim them;
	// the results are in order.
	InsertEvents(ctx context.Context, events []NewEvent) ([]StoredEvent, error)
	InsertFetch(ctx context.Context, f NewFetch) (StoredFetch, error)
	RecordEventNumbers(ctx context.Context, tenantID, subscriptionID, remoteRef string, numbers []int64) error
	MarkEnqueued(ctx context.Context, outboxIDs ...int64) error
	MarkEnqueueFailed(ctx context.Context, outboxID int64, reason string) error
	// ClaimSignature records a signed notification's signature: false when
	// it was claimed before (a replay). It drops those signed before
	// forgetBefore.
	ClaimSignature(ctx context.Context, tenantID, subscriptionID string, signature []byte, signedAt, forgetBefore time.Time) (bool, error)
	// ReleaseSignature forgets a claimed signature.
	ReleaseSignature(ctx context.Context, tenantID, subscriptionID string, signature []byte) error
}

// Queue hands a fetch to the worker. (Events need no queue: workers claim
// them from storage.)
type Queue interface {
	EnqueueFetch(ctx context.Context, tenantID string, fetchID int64) error
}

var fhirID = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// Focus resource types this version turns into events.
var supportedFocus = map[string]bool{"ExplanationOfBenefit": true, "Appointment": true}

// Service receives notifications.
type Service struct {
	Store          Store
	Queue          Queue
	Log            *slog.Logger
	EnqueueTimeout time.Duration
	Now            func() time.Time

	secrets  recent[subscriptionSecret]
	learning learning
}

type subscriptionSecret struct {
	sub  Subscription
	hash []byte
}

// SecretHash is what a subscription's secret is stored as: its SHA-256.
func SecretHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Result says what a notification led to; it holds no PHI.
type Result struct {
	Type       fhir.NotificationType
	Accepted   int // new events stored
	Duplicates int // events seen before
	Ignored    int // events whose focus type Tidings does not handle
	Fetches    int // fetches requested (id-only and empty content, pings)

	recorded map[int64]bool // event numbers stored with their event or fetch

	EventIDs []int64
}

// Authenticate checks the shared secret of a tenant's subscription.
// tenantID "" is the notify URL without a tenant, which names a
// subscription only while exactly one tenant has its id; an id two tenants
// share answers as an unknown one and as a wrong secret do.
func (s *Service) Authenticate(ctx context.Context, tenantID, subscriptionID, secret string) (Subscription, error) {
	if secret == "" {
		return Subscription{}, fault.New(fault.Unauthorized, "missing subscription secret (Authorization: Bearer …)")
	}
	// Every notification names its subscription: read it once a second at
	// most, not once a request. A subscription turned off or given a new
	// secret takes effect within that second.
	got, err := s.secrets.get(ctx, secretKey(tenantID, subscriptionID), func(ctx context.Context) (subscriptionSecret, error) {
		sub, hash, err := s.Store.SubscriptionSecret(ctx, tenantID, subscriptionID)
		return subscriptionSecret{sub, hash}, err
	})
	switch {
	case errors.Is(err, ErrUnknownSubscription), errors.Is(err, fault.Invalid):
		// An id the database cannot hold (a NUL byte, invalid UTF-8) names
		// no subscription either.
		got.hash = unknownSecretHash
	case err != nil:
		return Subscription{}, err
	}
	if subtle.ConstantTimeCompare(SecretHash(secret), got.hash) != 1 || err != nil {
		return Subscription{}, ErrWrongSecret
	}
	if got.sub.Status == StatusOff {
		return Subscription{}, ErrInactive
	}
	return got.sub, nil
}

// secretKey is where Authenticate keeps a subscription it read: by tenant
// and id, or by id alone ("" tenant) for the URL without a tenant. A
// subscription id never holds '|'.
func secretKey(tenantID, subscriptionID string) string { return tenantID + "|" + subscriptionID }

// parseError gives the parser's errors their codes: a body that is not
// JSON or breaks FHIR's structure is invalid; a valid resource that is not
// a notification cannot be acted on. The parser's messages name fields and
// entries, never values.
func parseError(err error) error {
	switch {
	case errors.Is(err, fhir.ErrMalformed):
		return fault.Wrap(err, fault.Invalid, err.Error())
	case errors.Is(err, fhir.ErrNotNotification):
		return fault.Wrap(err, fault.Unprocessable, err.Error())
	}
	return err
}

// Receive processes one notification body for an authenticated subscription:
// a Subscriptions Backport notification Bundle or, as classic R4 rest-hook
// servers send it, the changed resource itself.
func (s *Service) Receive(ctx context.Context, sub Subscription, body []byte) (Result, error) {
	res, err := s.receive(ctx, sub, body)
	return res, parseError(err)
}

func (s *Service) receive(ctx context.Context, sub Subscription, body []byte) (Result, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return s.receiveResource(ctx, sub, body, "", "") // a classic rest-hook ping
	}
	n, err := fhir.ParseNotification(body)
	if errors.Is(err, fhir.ErrNotNotification) && resourceTypeOf(body) != "Bundle" {
		return s.receiveResource(ctx, sub, body, "", "")
	}
	if err != nil {
		return Result{}, err
	}
	res := Result{Type: n.Type}
	switch n.Type {
	case fhir.TypeHandshake, fhir.TypeHeartbeat, fhir.TypeQueryStatus:
		if sub.RemoteRef == "" && n.Subscription != "" {
			if err := s.Store.RecordEventNumbers(ctx, sub.TenantID, sub.ID, n.Subscription, nil); err != nil {
				return res, err
			}
		}
		// A status can turn the subscription off: this process reads it
		// afresh at once (others within a second).
		defer s.secrets.forget(secretKey(sub.TenantID, sub.ID))
		defer s.secrets.forget(secretKey("", sub.ID))
		return res, s.Store.RecordStatus(ctx, sub.TenantID, sub.ID, string(n.Type), n.Status, n.EventsSinceStart, s.now())
	case fhir.TypeEventNotification, fhir.TypeQueryEvent:
	default:
		return res, fault.Errorf(fault.Unsupported, "unsupported notification type %q", n.Type)
	}
	var full, byRef []fhir.Event
	var numbers []int64
	for _, ev := range n.Events {
		if ev.EventNumber >= 0 {
			numbers = append(numbers, ev.EventNumber)
		}
		switch {
		case ev.Focus != nil:
			full = append(full, ev)
		case ev.FocusRef != "":
			byRef = append(byRef, ev)
		}
	}
	if (len(byRef) > 0 || len(n.Events) == 0 || len(full)+len(byRef) < len(n.Events)) && sub.SourceID == "" {
		return res, fault.Errorf(fault.Unsupported, "%s content needs a FHIR source to fetch from, and this subscription has none (tidings subscription add --source-id)", n.Content)
	}
	if len(full) > 0 {
		if res, err = s.storeEvents(ctx, sub, res, full); err != nil {
			return res, err
		}
	}
	for _, ev := range byRef {
		if res, err = s.requestFetch(ctx, sub, res, FetchRead, ev.ResourceType, ev.FocusRef, ev.EventNumber); err != nil {
			return res, err
		}
	}
	// An event without a focus (empty content) says only "something changed":
	// search the source for what changed since the last event.
	for _, ev := range n.Events {
		if ev.Focus == nil && ev.FocusRef == "" {
			if res, err = s.requestFetch(ctx, sub, res, FetchSearch, "", "", ev.EventNumber); err != nil {
				return res, err
			}
		}
	}
	if len(n.Events) == 0 {
		if res, err = s.requestFetch(ctx, sub, res, FetchSearch, "", "", -1); err != nil {
			return res, err
		}
	}
	// Numbers not stored with a new event or fetch (ignored types, duplicates)
	// still count as seen; the subscription's own reference is learnt once.
	var rest []int64
	for _, num := range numbers {
		if !res.recorded[num] {
			rest = append(rest, num)
		}
	}
	remoteRef := ""
	if sub.RemoteRef == "" && n.Subscription != "" && s.learning.claim(secretKey(sub.TenantID, sub.ID)) {
		remoteRef = n.Subscription
	}
	if len(rest) > 0 || remoteRef != "" {
		if err := s.Store.RecordEventNumbers(ctx, sub.TenantID, sub.ID, remoteRef, rest); err != nil {
			if remoteRef != "" {
				s.learning.release(secretKey(sub.TenantID, sub.ID))
			}
			return res, fmt.Errorf("record event numbers: %w", err)
		}
	}
	res.recorded = nil
	return res, nil
}

func (r *Result) markRecorded(num *int64) {
	if num == nil {
		return
	}
	if r.recorded == nil {
		r.recorded = map[int64]bool{}
	}
	r.recorded[*num] = true
}

// requestFetch stores what must be fetched (a reference, or a search since the
// last event) with its outbox row, and hands it to the queue.
func (s *Service) requestFetch(ctx context.Context, sub Subscription, res Result, kind, resourceType, ref string, eventNumber int64) (Result, error) {
	if kind == FetchRead && !supportedFocus[resourceType] {
		res.Ignored++
		return res, nil
	}
	if kind == FetchRead && !readableRef(ref) {
		// Refused now, not when the worker tries: a reference with a query
		// could carry identifiers, and we would store it.
		return res, fmt.Errorf("%w: a focus reference must be [base/]Type/id[/_history/version] (no query, no fragment, at most 2048 characters)", fhir.ErrMalformed)
	}
	var num *int64
	key := sub.ID + "|" + kind + "|"
	switch {
	case eventNumber >= 0:
		v := eventNumber
		num = &v
		key += "n:" + strconv.FormatInt(eventNumber, 10)
	case kind == FetchSearch:
		// A ping has no number: pings coalesce while a search is pending (the
		// store frees the key when the fetch finishes).
		key += "pending"
	default:
		h := sha256.Sum256([]byte(ref))
		key += "r:" + hex.EncodeToString(h[:]) + "|pending"
	}
	stored, err := s.Store.InsertFetch(ctx, NewFetch{TenantID: sub.TenantID, SubscriptionID: sub.ID,
		Kind: kind, Reference: ref, EventNumber: num, DedupeKey: key})
	if err != nil {
		return res, fmt.Errorf("store fetch: %w", err)
	}
	if stored.Duplicate {
		res.Duplicates++
		return res, nil
	}
	res.Fetches++
	res.markRecorded(num)
	s.handOver(ctx, []queued{{stored.OutboxID, func(qctx context.Context) error {
		return s.Queue.EnqueueFetch(qctx, sub.TenantID, stored.FetchID)
	}}})
	return res, nil
}

// ErrMismatch means a classic rest-hook PUT's path names another resource than its body.
var ErrMismatch = fault.New(fault.Invalid, "resource does not match the request path")

// ReceiveResource takes a classic R4 rest-hook notification: the resource
// itself, POSTed or PUT to {endpoint}/{type}/{id} (wantType and wantID are
// then checked against the body). It has no event number. An empty body is a
// ping: Tidings searches the subscription's source for what changed.
func (s *Service) ReceiveResource(ctx context.Context, sub Subscription, body []byte, wantType, wantID string) (Result, error) {
	res, err := s.receiveResource(ctx, sub, body, wantType, wantID)
	return res, parseError(err)
}

func (s *Service) receiveResource(ctx context.Context, sub Subscription, body []byte, wantType, wantID string) (Result, error) {
	res := Result{Type: "rest-hook"}
	if len(bytes.TrimSpace(body)) == 0 {
		if sub.SourceID == "" {
			return res, fault.New(fault.Unsupported, "an empty rest-hook ping asks for a fetch, and this subscription has no FHIR source to fetch from")
		}
		return s.requestFetch(ctx, sub, res, FetchSearch, "", "", -1)
	}
	var head struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return res, fmt.Errorf("%w: the body is not a JSON resource", fhir.ErrMalformed)
	}
	if head.ResourceType == "" {
		return res, fmt.Errorf("%w: the body has no resourceType", fhir.ErrNotNotification)
	}
	if wantType != "" && (head.ResourceType != wantType || head.ID != wantID) {
		return res, fault.Errorf(fault.Invalid, "%w: the path names %s/%s", ErrMismatch, wantType, wantID)
	}
	if !supportedFocus[head.ResourceType] {
		res.Ignored = 1
		return res, nil
	}
	wrapped, err := fhir.WrapResources(body, "urn:tidings:rest-hook:"+sub.ID, "", s.now())
	if err != nil {
		return res, err
	}
	n, err := fhir.ParseNotification(wrapped)
	if err != nil {
		return res, err
	}
	for i := range n.Events {
		n.Events[i].EventNumber = -1 // classic rest-hook has no event numbers
	}
	return s.storeEvents(ctx, sub, res, n.Events)
}

func resourceTypeOf(body []byte) string {
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	if json.Unmarshal(body, &head) != nil {
		return ""
	}
	return head.ResourceType
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now().UTC()
}

// storeEvents stores each full-resource event of a supported type
// (deduplicated), where workers claim it.
func (s *Service) storeEvents(ctx context.Context, sub Subscription, res Result, events []fhir.Event) (Result, error) {
	for i, ev := range events {
		if ev.Focus == nil {
			return res, fault.New(fault.Unsupported, "event without its focus resource")
		}
		// Ids become part of the dedupe key and are kept in clear: they must be
		// FHIR ids (1-64 of A-Z a-z 0-9 - .), not arbitrary text.
		if !fhirID.MatchString(ev.ID) {
			return res, fmt.Errorf("%w: event %d: the focus resource's id is not a FHIR id (1-64 of A-Z a-z 0-9 - .)", fhir.ErrMalformed, i+1)
		}
		if ev.VersionID != "" && !fhirID.MatchString(ev.VersionID) {
			return res, fmt.Errorf("%w: event %d: meta.versionId is not a FHIR id", fhir.ErrMalformed, i+1)
		}
	}
	var batch []NewEvent
	for _, ev := range events {
		if !supportedFocus[ev.ResourceType] {
			res.Ignored++
			continue
		}
		var num *int64
		if ev.EventNumber >= 0 {
			v := ev.EventNumber
			num = &v
		}
		batch = append(batch, NewEvent{
			TenantID: sub.TenantID, SubscriptionID: sub.ID,
			ResourceType: ev.ResourceType, ResourceID: ev.ID, VersionID: ev.VersionID,
			EventNumber: num, DedupeKey: DedupeKey(dedupeScope(sub), ev), Record: ev,
		})
	}
	if len(batch) == 0 {
		return res, nil
	}
	stored, err := s.Store.InsertEvents(ctx, batch)
	if err != nil {
		return res, fmt.Errorf("store events: %w", err)
	}
	for i, st := range stored {
		if st.Duplicate {
			res.Duplicates++
			continue
		}
		res.Accepted++
		res.markRecorded(batch[i].EventNumber)
		res.EventIDs = append(res.EventIDs, st.EventID)
	}
	return res, nil
}

// queued is a new row to hand to the queue: its outbox row, and the enqueue.
type queued struct {
	outboxID int64
	enqueue  func(context.Context) error
}

// handOver hands new rows to the queue after their transaction committed,
// and reports how many it handed. A failure is not the sender's problem: the
// row is stored and the reconciler will enqueue it, so the request still
// succeeds.
func (s *Service) handOver(ctx context.Context, items []queued) int {
	if s.Queue == nil || len(items) == 0 {
		return 0
	}
	timeout := s.EnqueueTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	var done []int64
	for _, it := range items {
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		err := it.enqueue(qctx)
		cancel()
		if err != nil {
			if s.Log != nil {
				s.Log.Warn("enqueue failed; the reconciler will retry", "outbox_id", it.outboxID, "err", err)
			}
			_ = s.Store.MarkEnqueueFailed(context.WithoutCancel(ctx), it.outboxID, err.Error())
			// Redis is likely down: leave the rest to the reconciler rather than wait on each.
			break
		}
		done = append(done, it.outboxID)
	}
	if err := s.Store.MarkEnqueued(context.WithoutCancel(ctx), done...); err != nil && s.Log != nil {
		s.Log.Warn("mark enqueued failed; the reconciler may enqueue again (harmless)", "err", err)
	}
	return len(done)
}

// DedupeKey identifies an event across retries: (subscription, resource
// type, id, meta.versionId), or a hash of the resource when it has no version.
func DedupeKey(subscriptionID string, ev fhir.Event) string {
	version := "v:" + ev.VersionID
	if ev.VersionID == "" {
		h := sha256.Sum256(canonicalJSON(ev.Focus))
		version = "h:" + hex.EncodeToString(h[:])
	}
	return subscriptionID + "|" + ev.ResourceType + "|" + ev.ID + "|" + version
}

// canonicalJSON re-encodes a resource with sorted keys and no spacing, so the
// same resource formatted differently dedupes to the same key.
func canonicalJSON(raw json.RawMessage) []byte {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return raw
	}
	out, err := json.Marshal(v)
	if err != nil {
		return raw
	}
	return out
}

// readableRef reports whether ref is "[base/]Type/id[/_history/vid]".
func readableRef(ref string) bool {
	if ref == "" || len(ref) > 2048 || strings.ContainsAny(ref, "?# ") {
		return false
	}
	typ, id := refTypeID(ref)
	return typ != "" && typ[0] >= 'A' && typ[0] <= 'Z' && fhirID.MatchString(id)
}

// dedupeScope is what events deduplicate within: the FHIR source when the
// subscription has one (two subscriptions on one server, or a recovery, give
// one event per resource version), else the subscription.
func dedupeScope(sub Subscription) string {
	if sub.SourceID != "" {
		return "source:" + sub.SourceID
	}
	return sub.ID
}
