package fhir

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// AppointmentFacts is what a notice may use from an Appointment: when,
// with whom, where, and what happened to it. What the visit is for never
// travels: reasonCode, reasonReference, serviceCategory, serviceType and
// specialty are read only into Reasons (for a coarse classification),
// and description, comment, patientInstruction, appointmentType, basedOn
// and the participants' types are dropped.
type AppointmentFacts struct {
	ID, VersionID string
	// Status is one of the R4 codes: proposed, pending, booked, arrived,
	// fulfilled, cancelled, noshow, entered-in-error, checked-in, waitlist.
	// An Appointment without a status, or with another code, is refused.
	Status string
	// Start and End are as in the resource (FHIR instants), "" when absent;
	// a proposed Appointment may carry only requestedPeriod.
	Start, End string
	// StartTime and EndTime are Start and End parsed, in UTC; zero when
	// absent. A start or end that is not an instant is refused, so a
	// non-empty Start always has a non-zero StartTime.
	StartTime, EndTime time.Time
	MinutesDuration    int // 0 when absent
	// PatientRef is the actor reference of the first participant whose
	// actor is a Patient (by the resource it resolves to, else by the
	// reference's type, else by Reference.type), as written; "" when none.
	PatientRef string
	// PatientID is that patient's logical id, resolved as EOBFacts.PatientID.
	PatientID string
	// PractitionerName is the display of the first Practitioner or
	// PractitionerRole participant that has one, else the name of the
	// resource it resolves to (a PractitionerRole via its practitioner,
	// then its organization); "" when none.
	PractitionerName string
	// LocationName is the display of the first Location participant, else
	// the name of the Location it resolves to; "" when none.
	LocationName string
	// CancelledBy is "patient", "provider" or "other", read only from a
	// cancelationReason code of the HL7 appointment-cancellation-reason
	// code system (pat*, prov*, anything else); "" when there is no such
	// code. The reason's text and the code itself are dropped: codes such
	// as pat-preg or prov-onc reveal care.
	CancelledBy string
	// Reasons are the codings that say what the visit is for: reasonCode,
	// the code of each Condition, Procedure or Observation a
	// reasonReference resolves to (contained, or among the related
	// resources; a notification's Event.Related holds no clinical
	// resource, so a Condition that came only in the Bundle is unread and
	// must be fetched), serviceCategory, serviceType and specialty. They are for coarse flags such as "a sensitive reason"
	// and never go into a notice. Free text (description, comment,
	// patientInstruction, a reference's display) is not read.
	Reasons []Coding
	// UnreadReasons are the reasonReference references that resolve to
	// nothing at hand, so their codes are unknown; a caller may fetch
	// them and build the facts again. A reference with only a display
	// has nothing to read and is not listed.
	UnreadReasons []string
}

// LogValue keeps the facts out of logs.
func (AppointmentFacts) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// cancellationReasonSystem is the R4 code system of
// Appointment.cancelationReason.
const cancellationReasonSystem = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"

// appointmentProbe reads what samply's model hides: whether status is
// present at all (its enum decodes absence as "proposed") and the
// contained resources (which it does not model).
type appointmentProbe struct {
	ResourceType string            `json:"resourceType"`
	Status       *string           `json:"status"`
	Contained    []json.RawMessage `json:"contained"`
}

// AppointmentFactsFrom builds facts from an Appointment and the related
// resources (Event.Related); the Appointment's contained resources are used
// as well. References resolve as in EOBFactsFrom: related resources carry
// no fullUrl here, so a urn:uuid resolves only to a resource whose id is
// that uuid. Errors wrap ErrMalformed and name fields, never values.
func AppointmentFactsFrom(appt json.RawMessage, related []json.RawMessage) (AppointmentFacts, error) {
	return appointmentFacts(appt, related, nil)
}

// AppointmentFacts builds facts from the event's focus and related
// resources, resolving references by the fullUrls they had in the
// notification too.
func (e Event) AppointmentFacts() (AppointmentFacts, error) {
	return appointmentFacts(e.Focus, e.Related, e.RelatedURLs)
}

func appointmentFacts(raw json.RawMessage, related []json.RawMessage, urls []string) (AppointmentFacts, error) {
	var f AppointmentFacts
	if err := checkJSON(raw, "Appointment"); err != nil {
		return f, err
	}
	if firstNonSpace(raw) != '{' {
		return f, fmt.Errorf("%w: Appointment is not a JSON object", ErrMalformed)
	}
	var probe appointmentProbe
	if err := json.Unmarshal(raw, &probe); err != nil {
		return f, decodeError("Appointment", err)
	}
	if probe.ResourceType != "Appointment" {
		return f, fmt.Errorf("%w: resourceType is not Appointment", ErrMalformed)
	}
	if probe.Status == nil {
		return f, fmt.Errorf("%w: Appointment has no status", ErrMalformed)
	}
	// samply's enums reject unknown codes, so every R4 status decodes and
	// nothing else does.
	a, err := fhir.UnmarshalAppointment(raw)
	if err != nil {
		return f, decodeError("Appointment", err)
	}
	ix, err := relatedIndex(probe.Contained, related, urls)
	if err != nil {
		return f, err
	}

	f.ID = deref(a.Id)
	if a.Meta != nil {
		f.VersionID = deref(a.Meta.VersionId)
	}
	f.Status = a.Status.Code()
	f.Start, f.End = deref(a.Start), deref(a.End)
	if f.StartTime, err = instant(f.Start, "Appointment.start"); err != nil {
		return AppointmentFacts{}, err
	}
	if f.EndTime, err = instant(f.End, "Appointment.end"); err != nil {
		return AppointmentFacts{}, err
	}
	if a.MinutesDuration != nil {
		if *a.MinutesDuration < 0 {
			return AppointmentFacts{}, fmt.Errorf("%w: Appointment.minutesDuration is negative", ErrMalformed)
		}
		f.MinutesDuration = *a.MinutesDuration
	}

	for _, p := range a.Participant {
		if p.Actor == nil {
			continue
		}
		ref := deref(p.Actor.Reference)
		display := strings.TrimSpace(deref(p.Actor.Display))
		switch actorType(ix, p.Actor) {
		case "Patient":
			if f.PatientRef == "" && ref != "" {
				f.PatientRef = ref
				f.PatientID = patientID(ix, ref)
			}
		case "Practitioner", "PractitionerRole":
			if f.PractitionerName == "" {
				f.PractitionerName = display
				if f.PractitionerName == "" {
					f.PractitionerName = partyName(ix, ref, 0)
				}
			}
		case "Location":
			if f.LocationName == "" {
				f.LocationName = display
				if f.LocationName == "" {
					f.LocationName = partyName(ix, ref, 0)
				}
			}
		}
	}

	if a.CancelationReason != nil {
		f.CancelledBy = cancelledBy(*a.CancelationReason)
	}
	f.Reasons = conceptCodings(f.Reasons, a.ReasonCode, a.ServiceCategory, a.ServiceType, a.Specialty)
	for _, r := range a.ReasonReference {
		ref := deref(r.Reference)
		if ref == "" {
			continue
		}
		i, ok := ix.resolve(ref)
		if !ok {
			f.UnreadReasons = append(f.UnreadReasons, ref)
			continue
		}
		f.Reasons = append(f.Reasons, reasonCodings(ix.items[i].raw)...)
	}
	return f, nil
}

// conceptCodings appends the codings (those with a code) of each concept.
func conceptCodings(out []Coding, lists ...[]fhir.CodeableConcept) []Coding {
	for _, list := range lists {
		for _, cc := range list {
			for _, c := range cc.Coding {
				if code := deref(c.Code); code != "" {
					out = append(out, Coding{System: deref(c.System), Code: code})
				}
			}
		}
	}
	return out
}

// reasonResources are the resource types an Appointment.reasonReference
// may name whose code says what the visit is for.
var reasonResources = map[string]bool{"Condition": true, "Procedure": true, "Observation": true}

// reasonCodings reads the code of a resource a reasonReference resolved
// to; nil for another resource type.
func reasonCodings(raw json.RawMessage) []Coding {
	var r struct {
		ResourceType string `json:"resourceType"`
		Code         struct {
			Coding []struct{ System, Code string } `json:"coding"`
		} `json:"code"`
	}
	if json.Unmarshal(raw, &r) != nil || !reasonResources[r.ResourceType] {
		return nil
	}
	var out []Coding
	for _, c := range r.Code.Coding {
		if c.Code != "" {
			out = append(out, Coding{System: c.System, Code: c.Code})
		}
	}
	return out
}

// instant parses a FHIR instant (a full date and time with seconds and a
// zone) to UTC; "" gives the zero time.
func instant(s, where string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	// The zero instant (0001-01-01T00:00:00Z) would read as "absent".
	if err != nil || t.IsZero() {
		return time.Time{}, fmt.Errorf("%w: %s is not a FHIR instant", ErrMalformed, where)
	}
	return t.UTC(), nil
}

// actorType says what kind of resource a participant's actor is: the type
// of the resource the reference resolves to, else the type the reference
// names, else Reference.type (a type name or a StructureDefinition URL).
func actorType(ix *resourceIndex, actor *fhir.Reference) string {
	ref := deref(actor.Reference)
	if ref != "" {
		if i, ok := ix.resolve(ref); ok {
			return ix.items[i].head.ResourceType
		}
		if p := parseReference(ref); p.Type != "" {
			return p.Type
		}
	}
	t := deref(actor.Type)
	if i := strings.LastIndexByte(t, '/'); i >= 0 {
		t = t[i+1:]
	}
	return t
}

// cancelledBy reduces a cancelationReason to who cancelled.
func cancelledBy(cc fhir.CodeableConcept) string {
	for _, c := range cc.Coding {
		if deref(c.System) != cancellationReasonSystem {
			continue
		}
		code := deref(c.Code)
		switch {
		case code == "":
			continue
		case code == "pat" || strings.HasPrefix(code, "pat-"):
			return "patient"
		case code == "prov" || strings.HasPrefix(code, "prov-"):
			return "provider"
		default:
			return "other"
		}
	}
	return ""
}

// AppointmentEventKind is what happened to an Appointment, as far as a
// notice cares.
type AppointmentEventKind string

// The Appointment event kinds. KindOther means "nothing a notice announces".
const (
	KindBooked         AppointmentEventKind = "booked"
	KindRescheduled    AppointmentEventKind = "rescheduled"
	KindCancelled      AppointmentEventKind = "cancelled"
	KindFulfilled      AppointmentEventKind = "fulfilled"
	KindNoShow         AppointmentEventKind = "noshow"
	KindEnteredInError AppointmentEventKind = "entered-in-error"
	KindOther          AppointmentEventKind = "other"
)

// AppointmentEventKindOf derives what happened from the current facts and
// those of the previous version of the same Appointment that Tidings saw
// (nil when none). Matching the two versions is the caller's job.
//
//	cur.Status                        prev                                  kind
//	booked                            nil, or prev.Status != booked         booked
//	booked                            booked, StartTime differs             rescheduled
//	booked                            booked, same StartTime                other
//	cancelled, fulfilled, noshow,     nil, or prev.Status != cur.Status     cancelled, fulfilled, noshow,
//	  entered-in-error                                                        entered-in-error
//	cancelled, fulfilled, noshow,     prev.Status == cur.Status             other
//	  entered-in-error
//	proposed, pending, waitlist,      anything                              other
//	  arrived, checked-in
//
// Starts compare as instants (StartTime), so the same time written with
// another offset is no reschedule; a start that appears or disappears is
// one. A change of end alone is not a reschedule.
func AppointmentEventKindOf(cur AppointmentFacts, prev *AppointmentFacts) AppointmentEventKind {
	switch cur.Status {
	case "booked":
		switch {
		case prev == nil || prev.Status != "booked":
			return KindBooked
		case !cur.StartTime.Equal(prev.StartTime):
			return KindRescheduled
		}
		return KindOther
	case "cancelled", "fulfilled", "noshow", "entered-in-error":
		if prev != nil && prev.Status == cur.Status {
			return KindOther
		}
		return AppointmentEventKind(cur.Status)
	}
	return KindOther
}
