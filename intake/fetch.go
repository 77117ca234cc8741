package intake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/tidings-health/tidings/fault"
	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/fhir/client"
	"github.com/tidings-health/tidings/metrics"
)

// FHIRReader is what fetching needs from a subscription's FHIR server;
// *client.Client is the real one.
type FHIRReader interface {
	ReadReference(ctx context.Context, ref string) (json.RawMessage, error)
	Search(ctx context.Context, resourceType string, params url.Values) ([]json.RawMessage, error)
	Events(ctx context.Context, subscriptionID string, from, to int64) (json.RawMessage, error)
}

// Sources gives the reader for a registered FHIR source.
type Sources interface {
	Reader(ctx context.Context, tenantID, sourceID string) (FHIRReader, error)
}

// FetchStore is what fetching and gap recovery need from storage.
type FetchStore interface {
	LoadFetch(ctx context.Context, id int64) (Fetch, error)
	FinishFetch(ctx context.Context, f Fetch, status string, events int, errText string) error
	SubscriptionByID(ctx context.Context, tenantID, id string) (Subscription, error)
	LastEventAt(ctx context.Context, tenantID, subscriptionID string) (time.Time, error)
	DetectGaps(ctx context.Context, settle time.Duration) (int64, error)
	OpenGaps(ctx context.Context, limit int) ([]Gap, error)
	FinishGap(ctx context.Context, g Gap, recovered bool, method string, events int, errText string) error
	MarkSilent(ctx context.Context, now time.Time) (int64, error)
	SeenAt(ctx context.Context, tenantID, subscriptionID string, n int64) (time.Time, error)
	// WithMonitorLock runs fn unless another replica's monitor holds the lock.
	WithMonitorLock(ctx context.Context, fn func() error) (bool, error)
	// LatestRecord is the newest stored version of a resource from the
	// subscription's source (a fault.NotFound error when Tidings never saw
	// it there; another source's resource of that id is another resource).
	LatestRecord(ctx context.Context, tenantID, subscriptionID, resourceType, resourceID string) (fhir.Event, error)
}

// ErrPermanent marks a fetch outcome that retrying cannot change.
var ErrPermanent = errors.New("permanent")

// searchOverlap is how far before the last event a catch-up search starts;
// what it finds twice is deduplicated.
const searchOverlap = 5 * time.Minute

// Fetcher turns fetches and gaps into events.
type Fetcher struct {
	Service *Service
	Store   FetchStore
	Sources Sources
	Log     *slog.Logger
	// Metrics counts the events fetches store; nil counts nothing.
	Metrics *metrics.Metrics

	subs recent[Subscription]
}

// storeEvents stores fetched events as intake stores notified ones, and
// counts the new ones.
func (f *Fetcher) storeEvents(ctx context.Context, sub Subscription, res Result, events []fhir.Event) (Result, error) {
	before := res.Accepted
	res, err := f.Service.storeEvents(ctx, sub, res, events)
	if err == nil {
		f.Metrics.EventsAccepted(metrics.FromFetch, res.Accepted-before)
	}
	return res, err
}

// ProcessFetch performs one fetch: a read of the focus reference (id-only
// content) or a search since the last event (empty content, pings).
func (f *Fetcher) ProcessFetch(ctx context.Context, tenantID string, fetchID int64) error {
	ft, err := f.Store.LoadFetch(ctx, fetchID)
	if err != nil {
		return fmt.Errorf("fetch %d: %w", fetchID, err)
	}
	if ft.TenantID != tenantID {
		return fmt.Errorf("fetch %d: task tenant does not match: %w", fetchID, ErrPermanent)
	}
	if ft.Status != FetchPending {
		return nil
	}
	sub, err := f.Store.SubscriptionByID(ctx, ft.TenantID, ft.SubscriptionID)
	if err != nil {
		return fmt.Errorf("fetch %d: %w", fetchID, err)
	}
	if sub.SourceID == "" {
		return f.fail(ctx, ft, "the subscription has no FHIR source to fetch from")
	}
	reader, err := f.Sources.Reader(ctx, sub.TenantID, sub.SourceID)
	if err != nil {
		return fmt.Errorf("fetch %d: source: %w", fetchID, err)
	}
	var events []fhir.Event
	switch ft.Kind {
	case FetchRead:
		res, err := reader.ReadReference(ctx, ft.Reference)
		if errors.Is(err, client.ErrGone) {
			gone, gerr := f.goneEvent(ctx, ft)
			if gerr != nil {
				return fmt.Errorf("fetch %d: %w", fetchID, gerr)
			}
			if gone == nil {
				// Deleted before we could read it: nothing to notify about an EOB.
				return f.Store.FinishFetch(ctx, ft, FetchDone, 0, "the resource is gone (404/410)")
			}
			events = append(events, *gone)
			break
		}
		if errors.Is(err, client.ErrForeignReference) || errors.Is(err, client.ErrInvalidReference) {
			return f.fail(ctx, ft, "the focus reference is not on the subscription's FHIR source")
		}
		if err != nil {
			return fmt.Errorf("fetch %d: %w", fetchID, err)
		}
		ev, err := f.eventFrom(ctx, reader, res)
		if err != nil {
			return fmt.Errorf("fetch %d: %w", fetchID, err)
		}
		if ft.EventNumber != nil {
			ev.EventNumber = *ft.EventNumber
		}
		events = append(events, ev)
	case FetchSearch:
		since, err := f.Store.LastEventAt(ctx, sub.TenantID, sub.ID)
		if err != nil {
			return fmt.Errorf("fetch %d: %w", fetchID, err)
		}
		events, err = f.searchSince(ctx, reader, sub, since)
		if err != nil {
			return fmt.Errorf("fetch %d: %w", fetchID, err)
		}
	}
	res, err := f.storeEvents(ctx, sub, Result{}, events)
	if err != nil {
		if errors.Is(err, fhir.ErrMalformed) {
			return f.fail(ctx, ft, "the fetched resource is unusable: "+err.Error())
		}
		return fmt.Errorf("fetch %d: %w", fetchID, err)
	}
	return f.Store.FinishFetch(ctx, ft, FetchDone, res.Accepted, "")
}

func (f *Fetcher) fail(ctx context.Context, ft Fetch, reason string) error {
	if err := f.Store.FinishFetch(ctx, ft, FetchFailed, 0, reason); err != nil {
		return err
	}
	return fmt.Errorf("fetch %d failed: %w", ft.ID, ErrPermanent)
}

// GiveUp records a fetch that ran out of retries.
func (f *Fetcher) GiveUp(ctx context.Context, fetchID int64, cause error) error {
	ft, err := f.Store.LoadFetch(ctx, fetchID)
	if err != nil || ft.Status != FetchPending {
		return err
	}
	return f.Store.FinishFetch(ctx, ft, FetchFailed, 0, "gave up after the last retry: "+cause.Error())
}

// goneEvent turns an Appointment that disappeared from its source into a
// cancellation: the last version Tidings saw, with status "cancelled". It is
// nil for other types, or when Tidings never saw the appointment.
func (f *Fetcher) goneEvent(ctx context.Context, ft Fetch) (*fhir.Event, error) {
	typ, id := refTypeID(ft.Reference)
	if typ != "Appointment" {
		return nil, nil
	}
	rec, err := f.Store.LatestRecord(ctx, ft.TenantID, ft.SubscriptionID, typ, id)
	if errors.Is(err, fault.NotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var res map[string]any
	if err := json.Unmarshal(rec.Focus, &res); err != nil {
		return nil, err
	}
	if res["status"] == "cancelled" {
		return nil, nil // already cancelled
	}
	res["status"] = "cancelled"
	delete(res, "meta") // not a version the server made
	focus, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	ev := fhir.Event{EventNumber: -1, ResourceType: typ, ID: id, Focus: focus, Related: rec.Related, RelatedURLs: rec.RelatedURLs}
	if ft.EventNumber != nil {
		ev.EventNumber = *ft.EventNumber
	}
	return &ev, nil
}

// refTypeID reads the type and id of "…/Type/id" or "…/Type/id/_history/v".
func refTypeID(ref string) (string, string) {
	parts := strings.Split(strings.TrimRight(ref, "/"), "/")
	if len(parts) >= 4 && parts[len(parts)-2] == "_history" {
		parts = parts[:len(parts)-2]
	}
	if len(parts) < 2 {
		return "", ""
	}
	return parts[len(parts)-2], parts[len(parts)-1]
}

// searchSince searches the subscription's criteria for resources changed
// since a moment (less an overlap; what is found twice dedupes). A search cut
// short by the client's page or entry limits still yields what it found; the
// next search starts after it.
func (f *Fetcher) searchSince(ctx context.Context, reader FHIRReader, sub Subscription, since time.Time) ([]fhir.Event, error) {
	typ, params, err := criteria(sub.Criteria)
	if err != nil {
		return nil, err
	}
	if since.IsZero() {
		since = sub.CreatedAt
	}
	params.Set("_lastUpdated", "ge"+since.Add(-searchOverlap).UTC().Format(time.RFC3339))
	found, err := reader.Search(ctx, typ, params)
	if errors.Is(err, client.ErrTruncated) && len(found) > 0 {
		if f.Log != nil {
			f.Log.Warn("search cut short by its limits; keeping what it found", "subscription", sub.ID, "found", len(found))
		}
	} else if err != nil {
		return nil, err
	}
	var events []fhir.Event
	for _, res := range found {
		ev, err := f.eventFrom(ctx, reader, res)
		if errors.Is(err, fhir.ErrMalformed) {
			continue // one unusable resource does not sink the others
		}
		if err != nil {
			return nil, err
		}
		if supportedFocus[ev.ResourceType] && fhirID.MatchString(ev.ID) && (ev.VersionID == "" || fhirID.MatchString(ev.VersionID)) {
			events = append(events, ev)
		}
	}
	return events, nil
}

// criteria splits "Type?a=b" into the type and its parameters; an empty
// criteria searches every ExplanationOfBenefit.
func criteria(c string) (string, url.Values, error) {
	if c == "" {
		return "ExplanationOfBenefit", url.Values{}, nil
	}
	typ, query, _ := strings.Cut(c, "?")
	params, err := url.ParseQuery(query)
	if err != nil || typ == "" {
		return "", nil, fmt.Errorf("the subscription's criteria is not Type?params: %w", ErrPermanent)
	}
	return typ, params, nil
}

// eventFrom makes an event of a fetched resource, fetching the resources it
// references that a notice needs (an EOB's patient, insurer and provider; an
// Appointment's participants) unless they are contained.
func (f *Fetcher) eventFrom(ctx context.Context, reader FHIRReader, res json.RawMessage) (fhir.Event, error) {
	var head struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
		Meta         struct {
			VersionID string `json:"versionId"`
		} `json:"meta"`
		Patient     struct{ Reference string } `json:"patient"`
		Insurer     struct{ Reference string } `json:"insurer"`
		Provider    struct{ Reference string } `json:"provider"`
		Participant []struct {
			Actor struct{ Reference string } `json:"actor"`
		} `json:"participant"`
	}
	// The same guard as a notification's body, so that a fetched focus is
	// stored as checked as a bundled one.
	if err := fhir.CheckResource(res); err != nil {
		return fhir.Event{}, err
	}
	if err := json.Unmarshal(res, &head); err != nil {
		return fhir.Event{}, fmt.Errorf("%w: the fetched body is not a resource", fhir.ErrMalformed)
	}
	ev := fhir.Event{EventNumber: -1, ResourceType: head.ResourceType, ID: head.ID, VersionID: head.Meta.VersionID, Focus: res, Guarded: true}
	if !supportedFocus[head.ResourceType] {
		return ev, nil
	}
	refs := []string{head.Patient.Reference, head.Insurer.Reference, head.Provider.Reference}
	for _, p := range head.Participant { // Appointment: patient, practitioner(role), location
		refs = append(refs, p.Actor.Reference)
	}
	seen := map[string]bool{}
	for _, ref := range refs {
		if seen[ref] || len(ev.Related) >= 10 {
			continue
		}
		seen[ref] = true
		rel, err := readOptional(ctx, reader, ref)
		if err != nil {
			return fhir.Event{}, err
		}
		if rel != nil {
			ev.Related = append(ev.Related, rel)
			ev.RelatedURLs = append(ev.RelatedURLs, ref)
		}
	}
	return ev, nil
}

// MonitorReport says what one monitoring pass did.
type MonitorReport struct {
	NewGaps, Recovered, Silent int64
}

// Monitor finds gaps in event numbers and recovers them ($events where the
// source supports it, else a _lastUpdated search), and marks subscriptions
// whose heartbeats stopped as silent.
func (f *Fetcher) Monitor(ctx context.Context, settle time.Duration) (MonitorReport, error) {
	var rep MonitorReport
	// One replica at a time: the others skip this pass.
	_, err := f.Store.WithMonitorLock(ctx, func() error {
		var err error
		rep, err = f.monitor(ctx, settle)
		return err
	})
	return rep, err
}

func (f *Fetcher) monitor(ctx context.Context, settle time.Duration) (MonitorReport, error) {
	var rep MonitorReport
	var err error
	if rep.NewGaps, err = f.Store.DetectGaps(ctx, settle); err != nil {
		return rep, fmt.Errorf("detect gaps: %w", err)
	}
	gaps, err := f.Store.OpenGaps(ctx, 100)
	if err != nil {
		return rep, err
	}
	for _, g := range gaps {
		ok, err := f.recoverGap(ctx, g)
		if err != nil && f.Log != nil {
			f.Log.Warn("gap recovery failed; will retry", "subscription", g.SubscriptionID, "from", g.FromNumber, "to", g.ToNumber, "err", err)
		}
		if ok {
			rep.Recovered++
		}
	}
	if rep.Silent, err = f.Store.MarkSilent(ctx, time.Now().UTC()); err != nil {
		return rep, err
	}
	return rep, nil
}

func (f *Fetcher) recoverGap(ctx context.Context, g Gap) (bool, error) {
	sub, err := f.Store.SubscriptionByID(ctx, g.TenantID, g.SubscriptionID)
	if err != nil {
		return false, err
	}
	if sub.SourceID == "" {
		return false, f.Store.FinishGap(ctx, g, false, "none", 0, "the subscription has no FHIR source to recover from")
	}
	reader, err := f.Sources.Reader(ctx, sub.TenantID, sub.SourceID)
	if err != nil {
		return false, err
	}
	if remote := remoteSubscriptionID(sub.RemoteRef); remote != "" {
		bundle, err := reader.Events(ctx, remote, g.FromNumber, g.ToNumber)
		var se *client.StatusError
		switch {
		case err == nil:
			n, perr := fhir.ParseNotification(bundle)
			if perr != nil {
				return false, f.Store.FinishGap(ctx, g, false, "$events", 0, "the $events answer is not a notification bundle: "+perr.Error())
			}
			accepted, err := f.recoverEvents(ctx, sub, n)
			if err != nil {
				return false, f.Store.FinishGap(ctx, g, false, "$events", 0, err.Error())
			}
			return true, f.Store.FinishGap(ctx, g, true, "$events", accepted, "")
		case errors.Is(err, client.ErrUnsupported), errors.As(err, &se) && se.StatusCode >= 400 && se.StatusCode < 500:
			// Not supported, or refused for this subscription (e.g. a content
			// level it will not raise): fall back to a search.
		default:
			return false, f.Store.FinishGap(ctx, g, false, "$events", 0, err.Error())
		}
	}
	// Search from just before the gap: the missing events came before the
	// ones that revealed it.
	since, err := f.Store.SeenAt(ctx, sub.TenantID, sub.ID, g.FromNumber-1)
	if err != nil {
		return false, err
	}
	events, err := f.searchSince(ctx, reader, sub, since)
	if err != nil {
		return false, f.Store.FinishGap(ctx, g, false, "search", 0, err.Error())
	}
	res, err := f.storeEvents(ctx, sub, Result{}, events)
	if err != nil {
		return false, f.Store.FinishGap(ctx, g, false, "search", 0, err.Error())
	}
	return true, f.Store.FinishGap(ctx, g, true, "search", res.Accepted, "")
}

// recoverEvents stores what an $events answer holds: full resources as they
// are, references by fetching them.
func (f *Fetcher) recoverEvents(ctx context.Context, sub Subscription, n *fhir.Notification) (int, error) {
	var full []fhir.Event
	res := Result{}
	var err error
	for _, ev := range n.Events {
		switch {
		case ev.Focus != nil:
			full = append(full, ev)
		case ev.FocusRef != "":
			if res, err = f.Service.requestFetch(ctx, sub, res, FetchRead, ev.ResourceType, ev.FocusRef, ev.EventNumber); err != nil {
				return 0, err
			}
		default: // empty content: search for what that event was about
			if res, err = f.Service.requestFetch(ctx, sub, res, FetchSearch, "", "", ev.EventNumber); err != nil {
				return 0, err
			}
		}
	}
	if res, err = f.storeEvents(ctx, sub, res, full); err != nil {
		return 0, err
	}
	return res.Accepted + res.Fetches, nil
}

// remoteSubscriptionID is the id in ".../Subscription/{id}" (or "Subscription/{id}").
func remoteSubscriptionID(ref string) string {
	i := strings.LastIndex(ref, "Subscription/")
	if i < 0 {
		return ""
	}
	id := ref[i+len("Subscription/"):]
	if j := strings.IndexAny(id, "/?#"); j >= 0 {
		id = id[:j]
	}
	if !fhirID.MatchString(id) {
		return ""
	}
	return id
}

// FetchReferences reads resources a notification did not carry (the
// patient, for the address; an insurer or provider, for its name) from the
// subscription's FHIR source, and returns those it found with the reference
// each was read by. It finds nothing, without an error, when the subscription
// has no source; references not to fetch (contained, urn:uuid, another
// server's) and resources the source no longer has are skipped.
func (f *Fetcher) FetchReferences(ctx context.Context, tenantID, subscriptionID string, refs []string) ([]json.RawMessage, []string, error) {
	// Asked for every EOB a worker notices: the subscription is read once a
	// second at most.
	sub, err := f.subs.get(ctx, secretKey(tenantID, subscriptionID), func(ctx context.Context) (Subscription, error) {
		return f.Store.SubscriptionByID(ctx, tenantID, subscriptionID)
	})
	if err != nil || sub.SourceID == "" {
		return nil, nil, err
	}
	reader, err := f.Sources.Reader(ctx, sub.TenantID, sub.SourceID)
	if err != nil {
		return nil, nil, err
	}
	var found []json.RawMessage
	var urls []string
	for _, ref := range refs {
		res, err := readOptional(ctx, reader, ref)
		if err != nil {
			return nil, nil, err
		}
		if res != nil {
			found = append(found, res)
			urls = append(urls, ref)
		}
	}
	return found, urls, nil
}

// readOptional reads a reference a notice could use. A reference that is not
// ours to fetch (empty, contained, urn:uuid, another server's) or a resource
// the source no longer has is nil without an error: the notice falls back to
// displays, or to no contact.
func readOptional(ctx context.Context, reader FHIRReader, ref string) (json.RawMessage, error) {
	if ref == "" || strings.HasPrefix(ref, "#") || strings.HasPrefix(ref, "urn:") {
		return nil, nil
	}
	res, err := reader.ReadReference(ctx, ref)
	if errors.Is(err, client.ErrGone) || errors.Is(err, client.ErrForeignReference) || errors.Is(err, client.ErrInvalidReference) {
		return nil, nil
	}
	return res, err
}
