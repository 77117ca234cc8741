package fhir

import (
	"encoding/json"
	"log/slog"
	"math"
	"net/mail"
	"strings"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// PatientContact is how a patient can be reached and addressed.
type PatientContact struct {
	PatientID string
	Email     string
	Language  string // BCP-47 code of the preferred communication, else of the first
	BirthDate string // YYYY-MM-DD; "" when the Patient gives none or only a year or month
}

// LogValue keeps contact details out of logs.
func (PatientContact) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// patientView is the part of a Patient that contact extraction reads,
// built from samply's datatypes.
type patientView struct {
	ResourceType  string                      `json:"resourceType"`
	ID            string                      `json:"id"`
	Telecom       []fhir.ContactPoint         `json:"telecom"`
	Communication []fhir.PatientCommunication `json:"communication"`
	BirthDate     string                      `json:"birthDate"`
}

// PatientContactFrom finds the Patient that patientRef names among related
// ("Type/id", absolute URL, urn:uuid whose uuid is the id, or a bare id;
// never a guess such as "the only Patient present") and
// extracts its email and language. The email is the telecom with
// system=email and a value, not use=old, preferring use=home, then the
// lowest rank, then document order. ok is false when no such Patient is
// among related or it cannot be read.
func PatientContactFrom(patientRef string, related []json.RawMessage) (PatientContact, bool) {
	return patientContact(patientRef, related, nil)
}

// PatientContact is PatientContactFrom over the event's related resources,
// resolving patientRef by the fullUrls they had in the notification too.
func (e Event) PatientContact(patientRef string) (PatientContact, bool) {
	return patientContact(patientRef, e.Related, e.RelatedURLs)
}

func patientContact(patientRef string, related []json.RawMessage, urls []string) (PatientContact, bool) {
	if len(related) > MaxEntries {
		return PatientContact{}, false
	}
	ix := newResourceIndex()
	for k, r := range related {
		if checkJSON(r, "related resource") != nil || firstNonSpace(r) != '{' {
			continue
		}
		var h resourceHead
		if json.Unmarshal(r, &h) != nil || h.ResourceType != "Patient" {
			continue
		}
		ix.add(urlAt(urls, k), r, h)
	}
	i, ok := ix.resolve(patientRef)
	if !ok && isID(patientRef) {
		i, ok = ix.resolve("Patient/" + patientRef)
	}
	if !ok {
		return PatientContact{}, false
	}
	var p patientView
	if json.Unmarshal(ix.items[i].raw, &p) != nil {
		return PatientContact{}, false
	}
	return PatientContact{PatientID: p.ID, Email: pickEmail(p.Telecom), Language: pickLanguage(p.Communication), BirthDate: fullDate(p.BirthDate)}, true
}

func pickEmail(telecom []fhir.ContactPoint) string {
	best, bestScore := "", [2]int{math.MaxInt, math.MaxInt}
	for _, t := range telecom {
		if t.System == nil || *t.System != fhir.ContactPointSystemEmail || !isAddress(deref(t.Value)) {
			continue
		}
		if t.Use != nil && *t.Use == fhir.ContactPointUseOld {
			continue
		}
		score := [2]int{1, math.MaxInt}
		if t.Use != nil && *t.Use == fhir.ContactPointUseHome {
			score[0] = 0
		}
		if t.Rank != nil {
			score[1] = *t.Rank
		}
		if score[0] < bestScore[0] || (score[0] == bestScore[0] && score[1] < bestScore[1]) || best == "" {
			best, bestScore = *t.Value, score
		}
	}
	return best
}

// isAddress accepts a bare address (local@domain) and nothing else: a
// telecom with system=email may hold anything (the converted SIU example
// holds "89898989"), and a value that is not an address must not be mailed to.
func isAddress(v string) bool {
	a, err := mail.ParseAddress(v)
	return err == nil && a.Address == v && a.Name == "" && strings.Contains(v, "@")
}

func pickLanguage(comms []fhir.PatientCommunication) string {
	chosen := -1
	for i, c := range comms {
		if c.Preferred != nil && *c.Preferred {
			chosen = i
			break
		}
	}
	if chosen < 0 {
		if len(comms) == 0 {
			return ""
		}
		chosen = 0
	}
	codings := comms[chosen].Language.Coding
	for _, c := range codings {
		if deref(c.System) == "urn:ietf:bcp:47" && deref(c.Code) != "" {
			return *c.Code
		}
	}
	for _, c := range codings {
		if deref(c.Code) != "" {
			return *c.Code
		}
	}
	return ""
}

// fullDate is d when it is a whole date (YYYY-MM-DD, as FHIR writes it),
// else "": a year or a month alone cannot prove who someone is.
func fullDate(d string) string {
	if _, err := time.Parse(time.DateOnly, d); err != nil {
		return ""
	}
	return d
}
