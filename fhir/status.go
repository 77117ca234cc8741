package fhir

import (
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// backportStatusProfile marks a Parameters resource as a Backport R4
// SubscriptionStatus.
const backportStatusProfile = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"

// backportNotificationProfile marks a Bundle as a Backport R4 notification.
const backportNotificationProfile = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4"

// statusEvent is one notification-event of a status, before its focus is
// looked up in the Bundle.
type statusEvent struct {
	number     int64
	timestamp  string
	focus      string
	additional []string
}

// subscriptionStatus is the content of the first entry of a notification
// Bundle, whichever of the three FHIR shapes carried it.
type subscriptionStatus struct {
	subscription     string
	topic            string
	status           string
	typ              NotificationType
	eventsSinceStart int64
	events           []statusEvent
}

var validStatusCodes = map[string]bool{
	"requested": true, "active": true, "error": true, "off": true, "entered-in-error": true,
}

var validTypes = map[NotificationType]bool{
	TypeHandshake: true, TypeHeartbeat: true, TypeEventNotification: true, TypeQueryStatus: true, TypeQueryEvent: true,
}

// param is one Parameters.parameter (or part) with its single value[x].
type param struct {
	name     string
	valueKey string
	value    json.RawMessage
	parts    []json.RawMessage
}

// readParam decodes one parameter strictly: an object with a string name, at
// most one value[x], and only the properties a parameter may have.
func readParam(raw json.RawMessage, where string) (param, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return param{}, fmt.Errorf("%w: %s is not an object", ErrMalformed, where)
	}
	var p param
	nameRaw, ok := m["name"]
	if !ok || json.Unmarshal(nameRaw, &p.name) != nil || p.name == "" {
		return param{}, fmt.Errorf("%w: %s has no name string", ErrMalformed, where)
	}
	for k, v := range m {
		switch {
		case k == "name", k == "id", k == "extension", k == "resource", strings.HasPrefix(k, "_"):
		case k == "modifierExtension":
			return param{}, fmt.Errorf("%w: %s carries a modifierExtension", ErrMalformed, where)
		case k == "part":
			if err := json.Unmarshal(v, &p.parts); err != nil {
				return param{}, fmt.Errorf("%w: %s.part is not an array", ErrMalformed, where)
			}
		case strings.HasPrefix(k, "value") && len(k) > len("value"):
			if p.valueKey != "" {
				return param{}, fmt.Errorf("%w: %s has more than one value[x]", ErrMalformed, where)
			}
			p.valueKey, p.value = k, v
		default:
			return param{}, fmt.Errorf("%w: %s has an unexpected property", ErrMalformed, where)
		}
	}
	return p, nil
}

// stringValue reads a primitive string value[x] whose key is one of keys.
func (p param) stringValue(where string, keys ...string) (string, error) {
	for _, k := range keys {
		if p.valueKey == k {
			var s string
			if err := json.Unmarshal(p.value, &s); err != nil {
				return "", fmt.Errorf("%w: %s.%s is not a string", ErrMalformed, where, k)
			}
			return s, nil
		}
	}
	return "", fmt.Errorf("%w: %s must have %s", ErrMalformed, where, strings.Join(keys, " or "))
}

// referenceValue reads valueReference.reference ("" when the Reference has
// no reference string, e.g. only an identifier).
func (p param) referenceValue(where string) (string, error) {
	if p.valueKey != "valueReference" {
		return "", fmt.Errorf("%w: %s must have valueReference", ErrMalformed, where)
	}
	var r struct {
		Reference *string `json:"reference"`
	}
	if err := json.Unmarshal(p.value, &r); err != nil {
		return "", fmt.Errorf("%w: %s.valueReference is not a Reference", ErrMalformed, where)
	}
	if r.Reference == nil {
		return "", nil
	}
	return *r.Reference, nil
}

// countValue reads a non-negative integer carried the way the Backport IG
// carries counters (valueString holding digits) or any integer-valued type.
func (p param) countValue(where string) (int64, error) {
	switch p.valueKey {
	case "valueString", "valueInteger", "valueInteger64", "valueUnsignedInt", "valuePositiveInt", "valueDecimal":
		return parseCount(p.value, p.valueKey == "valueDecimal", where+"."+p.valueKey)
	}
	return 0, fmt.Errorf("%w: %s must have an integer value (valueString, valueInteger...)", ErrMalformed, where)
}

// parseCount reads a non-negative int64 from a JSON number or a JSON string
// holding one (integer64 is a string in R5 JSON). When decimal is set, an
// integral decimal such as 3.0 is accepted too.
func parseCount(raw json.RawMessage, decimal bool, where string) (int64, error) {
	var text string
	if len(raw) > 0 && raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			return 0, fmt.Errorf("%w: %s is not a string", ErrMalformed, where)
		}
	} else {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return 0, fmt.Errorf("%w: %s is not a number", ErrMalformed, where)
		}
		text = n.String()
	}
	if v, err := strconv.ParseInt(text, 10, 64); err == nil {
		if v < 0 {
			return 0, fmt.Errorf("%w: %s is negative", ErrMalformed, where)
		}
		return v, nil
	}
	if decimal && len(text) <= 40 && !strings.ContainsAny(text, "eE") {
		if r, ok := new(big.Rat).SetString(text); ok && r.IsInt() && r.Sign() >= 0 && r.Num().IsInt64() {
			return r.Num().Int64(), nil
		}
	}
	return 0, fmt.Errorf("%w: %s is not a non-negative integer", ErrMalformed, where)
}

// looksLikeStatus reports whether a Parameters resource claims to be a
// subscription status: by profile, or by carrying the status parameters.
func looksLikeStatus(raw json.RawMessage) bool {
	var p struct {
		Meta *struct {
			Profile []string `json:"profile"`
		} `json:"meta"`
		Parameter []struct {
			Name string `json:"name"`
		} `json:"parameter"`
	}
	if json.Unmarshal(raw, &p) != nil {
		// Shape errors are reported by the strict parse.
		return true
	}
	if p.Meta != nil {
		for _, prof := range p.Meta.Profile {
			if prof == backportStatusProfile || strings.HasPrefix(prof, backportStatusProfile+"|") {
				return true
			}
		}
	}
	for _, pp := range p.Parameter {
		switch pp.Name {
		case "subscription", "notification-event", "events-since-subscription-start":
			return true
		}
	}
	return false
}

// parseStatusParameters reads a Backport R4 status Parameters strictly.
func parseStatusParameters(raw json.RawMessage, where string) (subscriptionStatus, error) {
	st := subscriptionStatus{eventsSinceStart: -1}
	var res struct {
		Parameter []json.RawMessage `json:"parameter"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return st, decodeError(where, err)
	}
	seen := make(map[string]bool)
	numbers := make(map[int64]bool)
	for i, pr := range res.Parameter {
		pw := fmt.Sprintf("%s.parameter[%d]", where, i)
		p, err := readParam(pr, pw)
		if err != nil {
			return st, err
		}
		switch p.name {
		case "subscription", "topic", "status", "type", "events-since-subscription-start":
			if seen[p.name] {
				return st, fmt.Errorf("%w: %s repeats the %q parameter", ErrMalformed, pw, p.name)
			}
			seen[p.name] = true
		}
		switch p.name {
		case "subscription":
			if st.subscription, err = p.referenceValue(pw); err != nil {
				return st, err
			}
		case "topic":
			if st.topic, err = p.stringValue(pw, "valueCanonical", "valueUri"); err != nil {
				return st, err
			}
		case "status":
			if st.status, err = p.stringValue(pw, "valueCode"); err != nil {
				return st, err
			}
		case "type":
			var code string
			if code, err = p.stringValue(pw, "valueCode"); err != nil {
				return st, err
			}
			st.typ = NotificationType(code)
		case "events-since-subscription-start":
			if st.eventsSinceStart, err = p.countValue(pw); err != nil {
				return st, err
			}
		case "notification-event":
			if len(st.events) >= MaxEvents {
				return st, fmt.Errorf("%w: %s has more than %d notification events", ErrMalformed, where, MaxEvents)
			}
			ev, err := parseEventParts(p, pw)
			if err != nil {
				return st, err
			}
			if ev.number >= 0 {
				if numbers[ev.number] {
					return st, fmt.Errorf("%w: %s repeats an event-number", ErrMalformed, pw)
				}
				numbers[ev.number] = true
			}
			st.events = append(st.events, ev)
		}
	}
	if !seen["status"] {
		return st, fmt.Errorf("%w: %s has no status parameter", ErrMalformed, where)
	}
	return st, st.validate(where)
}

// parseEventParts reads the parts of one notification-event parameter.
func parseEventParts(p param, where string) (statusEvent, error) {
	ev := statusEvent{number: -1}
	if p.valueKey != "" {
		return ev, fmt.Errorf("%w: %s must carry parts, not a value", ErrMalformed, where)
	}
	seen := make(map[string]bool)
	for j, rawPart := range p.parts {
		partWhere := fmt.Sprintf("%s.part[%d]", where, j)
		part, err := readParam(rawPart, partWhere)
		if err != nil {
			return ev, err
		}
		switch part.name {
		case "event-number", "timestamp", "focus":
			if seen[part.name] {
				return ev, fmt.Errorf("%w: %s repeats the %q part", ErrMalformed, partWhere, part.name)
			}
			seen[part.name] = true
		}
		switch part.name {
		case "event-number":
			if ev.number, err = part.countValue(partWhere); err != nil {
				return ev, err
			}
		case "timestamp":
			if ev.timestamp, err = part.stringValue(partWhere, "valueInstant", "valueDateTime", "valueDate"); err != nil {
				return ev, err
			}
		case "focus":
			if ev.focus, err = part.referenceValue(partWhere); err != nil {
				return ev, err
			}
		case "additional-context":
			ref, err := part.referenceValue(partWhere)
			if err != nil {
				return ev, err
			}
			if ref != "" {
				ev.additional = append(ev.additional, ref)
			}
		}
	}
	return ev, nil
}

// validate checks what every status shape must have.
func (st subscriptionStatus) validate(where string) error {
	if st.subscription == "" {
		return fmt.Errorf("%w: %s has no subscription reference", ErrMalformed, where)
	}
	if st.typ == "" {
		return fmt.Errorf("%w: %s has no type", ErrMalformed, where)
	}
	if !validTypes[st.typ] {
		return fmt.Errorf("%w: %s has an unknown notification type code", ErrMalformed, where)
	}
	if st.status != "" && !validStatusCodes[st.status] {
		return fmt.Errorf("%w: %s has an unknown status code", ErrMalformed, where)
	}
	return nil
}

// r5Status is an R4B/R5 SubscriptionStatus resource, the subset we read.
type r5Status struct {
	Status                       *string         `json:"status"`
	Type                         *string         `json:"type"`
	EventsSinceSubscriptionStart json.RawMessage `json:"eventsSinceSubscriptionStart"`
	NotificationEvent            []struct {
		EventNumber json.RawMessage `json:"eventNumber"`
		Timestamp   *string         `json:"timestamp"`
		Focus       *struct {
			Reference *string `json:"reference"`
		} `json:"focus"`
		AdditionalContext []struct {
			Reference *string `json:"reference"`
		} `json:"additionalContext"`
	} `json:"notificationEvent"`
	Subscription *struct {
		Reference *string `json:"reference"`
	} `json:"subscription"`
	Topic *string `json:"topic"`
}

// parseStatusResource reads an R4B/R5 SubscriptionStatus resource.
func parseStatusResource(raw json.RawMessage, where string) (subscriptionStatus, error) {
	st := subscriptionStatus{eventsSinceStart: -1}
	var r r5Status
	if err := json.Unmarshal(raw, &r); err != nil {
		return st, decodeError(where, err)
	}
	if r.Subscription != nil && r.Subscription.Reference != nil {
		st.subscription = *r.Subscription.Reference
	}
	if r.Topic != nil {
		st.topic = *r.Topic
	}
	if r.Status != nil {
		st.status = *r.Status
	}
	if r.Type != nil {
		st.typ = NotificationType(*r.Type)
	}
	if len(r.EventsSinceSubscriptionStart) > 0 && string(r.EventsSinceSubscriptionStart) != "null" {
		n, err := parseCount(r.EventsSinceSubscriptionStart, false, where+".eventsSinceSubscriptionStart")
		if err != nil {
			return st, err
		}
		st.eventsSinceStart = n
	}
	if len(r.NotificationEvent) > MaxEvents {
		return st, fmt.Errorf("%w: %s has more than %d notification events", ErrMalformed, where, MaxEvents)
	}
	numbers := make(map[int64]bool)
	for i, ne := range r.NotificationEvent {
		ew := fmt.Sprintf("%s.notificationEvent[%d]", where, i)
		ev := statusEvent{number: -1}
		if len(ne.EventNumber) > 0 && string(ne.EventNumber) != "null" {
			n, err := parseCount(ne.EventNumber, false, ew+".eventNumber")
			if err != nil {
				return st, err
			}
			if numbers[n] {
				return st, fmt.Errorf("%w: %s repeats an eventNumber", ErrMalformed, ew)
			}
			numbers[n] = true
			ev.number = n
		}
		if ne.Timestamp != nil {
			ev.timestamp = *ne.Timestamp
		}
		if ne.Focus != nil && ne.Focus.Reference != nil {
			ev.focus = *ne.Focus.Reference
		}
		for _, ac := range ne.AdditionalContext {
			if ac.Reference != nil && *ac.Reference != "" {
				ev.additional = append(ev.additional, *ac.Reference)
			}
		}
		st.events = append(st.events, ev)
	}
	return st, st.validate(where)
}
