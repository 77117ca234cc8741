package fhir

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// wrappable are the resource types WrapResources turns into events.
var wrappable = map[string]bool{"ExplanationOfBenefit": true, "Appointment": true}

// WrapResources turns a bare ExplanationOfBenefit or Appointment, or a Bundle
// of any type except a notification Bundle holding such resources, into a
// Backport R4 full-resource event-notification Bundle: type history, first
// entry a backport-subscription-status-r4 Parameters (subscription =
// subscriptionURL, topic, status active, type event-notification,
// events-since-subscription-start = number of events, one notification-event
// per focus numbered from 1, timestamped now), then each focus and the
// resources it references as Event.Related describes, and nothing else.
// Entries keep their fullUrl; a focus without one is referenced as
// "Type/id", or by a generated urn:uuid when it has no usable id. The output
// is deterministic for the same inputs and parses with ParseNotification.
//
// It returns an error wrapping ErrNoFocus when there is nothing to wrap,
// ErrAlreadyNotification for a notification Bundle, and ErrMalformed for a
// body it cannot read.
func WrapResources(body []byte, subscriptionURL, topic string, now time.Time) ([]byte, error) {
	if subscriptionURL == "" {
		return nil, errors.New("fhir: WrapResources needs a subscription URL")
	}
	if err := checkJSON(body, "body"); err != nil {
		return nil, err
	}
	if firstNonSpace(body) != '{' {
		return nil, fmt.Errorf("%w: body is not a JSON object", ErrMalformed)
	}
	var head resourceHead
	if err := json.Unmarshal(body, &head); err != nil {
		return nil, decodeError("body", err)
	}
	var entries []bundleEntry
	switch {
	case head.ResourceType == "Bundle":
		env, es, err := decodeBundle(body)
		if err != nil {
			return nil, err
		}
		if _, err := readStatus(env, es); err == nil {
			return nil, ErrAlreadyNotification
		} else if !errors.Is(err, ErrNotNotification) {
			return nil, err
		}
		entries = es
	case wrappable[head.ResourceType]:
		entries = []bundleEntry{{Resource: body}}
	case head.ResourceType == "":
		return nil, fmt.Errorf("%w: body has no resourceType", ErrMalformed)
	default:
		return nil, fmt.Errorf("%w: body is a resource of another type", ErrNoFocus)
	}
	ix, pos, err := indexEntries(entries, false)
	if err != nil {
		return nil, err
	}
	var foci []int
	for i := range entries {
		if pos[i] >= 0 && wrappable[ix.items[pos[i]].head.ResourceType] {
			foci = append(foci, pos[i])
		}
	}
	if len(foci) == 0 {
		return nil, fmt.Errorf("%w: the Bundle holds no ExplanationOfBenefit or Appointment", ErrNoFocus)
	}
	if len(foci) > MaxEvents {
		return nil, fmt.Errorf("%w: more than %d resources to wrap", ErrMalformed, MaxEvents)
	}

	seed := sha256.New()
	for _, part := range [][]byte{body, []byte(subscriptionURL), []byte(topic), []byte(now.UTC().Format(time.RFC3339Nano))} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		seed.Write(n[:])
		seed.Write(part)
	}
	base := seed.Sum(nil)
	stamp := now.UTC().Format("2006-01-02T15:04:05.000Z07:00")

	var out []fhir.BundleEntry
	included := make(map[int]bool)
	addEntry := func(i int, fullURL string) {
		it := ix.items[i]
		e := fhir.BundleEntry{Resource: it.raw}
		if fullURL != "" {
			e.FullUrl = &fullURL
		}
		if isID(it.head.ID) {
			e.Request = &fhir.BundleEntryRequest{Method: fhir.HTTPVerbPUT, Url: it.head.ResourceType + "/" + it.head.ID}
			e.Response = &fhir.BundleEntryResponse{Status: "200"}
		} else {
			e.Request = &fhir.BundleEntryRequest{Method: fhir.HTTPVerbPOST, Url: it.head.ResourceType}
			e.Response = &fhir.BundleEntryResponse{Status: "201"}
		}
		out = append(out, e)
		included[i] = true
	}

	params := []fhir.ParametersParameter{
		{Name: "subscription", ValueReference: &fhir.Reference{Reference: ptr(subscriptionURL)}},
	}
	if topic != "" {
		params = append(params, fhir.ParametersParameter{Name: "topic", ValueCanonical: ptr(topic)})
	}
	params = append(params,
		fhir.ParametersParameter{Name: "status", ValueCode: ptr("active")},
		fhir.ParametersParameter{Name: "type", ValueCode: ptr(string(TypeEventNotification))},
		fhir.ParametersParameter{Name: "events-since-subscription-start", ValueString: ptr(strconv.Itoa(len(foci)))},
	)
	for k, f := range foci {
		it := ix.items[f]
		fullURL, ref := it.fullURL, it.fullURL
		if ref == "" {
			if isID(it.head.ID) {
				ref = it.head.ResourceType + "/" + it.head.ID
			} else {
				fullURL = "urn:uuid:" + derivedUUID(base, uint64(k)+2)
				ref = fullURL
			}
		}
		params = append(params, fhir.ParametersParameter{Name: "notification-event", Part: []fhir.ParametersParameter{
			{Name: "event-number", ValueString: ptr(strconv.Itoa(k + 1))},
			{Name: "timestamp", ValueInstant: ptr(stamp)},
			{Name: "focus", ValueReference: &fhir.Reference{Reference: ptr(ref)}},
		}})
		addEntry(f, fullURL)
		for _, r := range ix.related(f, nil) {
			if !included[r] {
				addEntry(r, ix.items[r].fullURL)
			}
		}
	}

	statusID := derivedUUID(base, 1)
	status, err := json.Marshal(fhir.Parameters{
		Id:        ptr(statusID),
		Meta:      &fhir.Meta{Profile: []string{backportStatusProfile}},
		Parameter: params,
	})
	if err != nil {
		return nil, fmt.Errorf("fhir: encode status: %w", err)
	}
	statusEntry := fhir.BundleEntry{
		FullUrl:  ptr("urn:uuid:" + statusID),
		Resource: status,
		Request:  &fhir.BundleEntryRequest{Method: fhir.HTTPVerbGET, Url: subscriptionURL + "/$status"},
		Response: &fhir.BundleEntryResponse{Status: "200"},
	}
	bundle := fhir.Bundle{
		Id:        ptr(derivedUUID(base, 0)),
		Meta:      &fhir.Meta{Profile: []string{backportNotificationProfile}},
		Type:      fhir.BundleTypeHistory,
		Timestamp: ptr(stamp),
		Entry:     append([]fhir.BundleEntry{statusEntry}, out...),
	}
	wrapped, err := json.Marshal(bundle)
	if err != nil {
		return nil, fmt.Errorf("fhir: encode bundle: %w", err)
	}
	// The contract is that the output parses back with every focus in
	// place; check it rather than trust every corner of the input (odd
	// fullUrls, ids shared across entries, nesting near the limit).
	back, err := ParseNotification(wrapped)
	if err != nil {
		return nil, fmt.Errorf("%w: the wrapped bundle does not parse back: %w", ErrMalformed, err)
	}
	if len(back.Events) != len(foci) {
		return nil, fmt.Errorf("%w: the wrapped bundle lost events", ErrMalformed)
	}
	for k, ev := range back.Events {
		if ev.Focus == nil {
			return nil, fmt.Errorf("%w: focus %d of the wrapped bundle cannot be resolved unambiguously", ErrMalformed, k)
		}
	}
	return wrapped, nil
}

// derivedUUID makes a version-5-style UUID string from a seed and a counter,
// so the same input always yields the same Bundle.
func derivedUUID(seed []byte, n uint64) string {
	h := sha256.New()
	h.Write(seed)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	h.Write(b[:])
	u := h.Sum(nil)[:16]
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func ptr[T any](v T) *T { return &v }
