package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// EOBFacts is what a notice may use from an ExplanationOfBenefit.
type EOBFacts struct {
	ID, VersionID string
	// PatientRef is EOB.patient.reference as written.
	PatientRef string
	// PatientID is the patient's logical id: the id of the related Patient
	// the reference resolves to, else the id in a "Patient/id" or absolute
	// reference, else "". Related resources carry no fullUrl, so a urn:uuid
	// resolves only to a Patient whose id is that uuid (as Synthea and
	// FHIR-Converter write them); we never guess from "the only Patient",
	// which could be a subscriber rather than the patient.
	PatientID string
	Use       string // claim | preauthorization | predetermination; "" when absent
	Outcome   string // queued | complete | error | partial; "" when absent
	// PayerName is insurer.display, else the name of the Organization the
	// insurer reference resolves to.
	PayerName string
	// ProviderName is provider.display, else the name of the Practitioner
	// (text, else given + family) or Organization the reference resolves
	// to; a PractitionerRole is followed to its practitioner, then its
	// organization.
	ProviderName string
	// ServiceDate (YYYY-MM-DD) is billablePeriod.start, else the earliest
	// item or addItem servicedDate / servicedPeriod.start, else created.
	ServiceDate string
	// Diagnoses are the diagnosis codings (as DiagnosisCodes lists them),
	// for coarse flags such as "has a sensitive diagnosis"; never carried
	// into a notice.
	Diagnoses []Coding
	// PatientShare is what the member owes, in this order of preference:
	//  1. the total whose category code is memberliability;
	//  2. the header adjudication memberliability, else the sum over items
	//     (and addItems) of their memberliability, where an item without
	//     its own memberliability contributes the sum of its details (and a
	//     detail without one the sum of its subDetails), so nothing is
	//     counted twice;
	//  3. the total whose category code is paidbypatient (or the older
	//     patientpay);
	//  4. nil.
	// Member liability comes before paid-by-patient because it is the
	// amount owed; CARIN EOBs often carry paidbypatient = 0 next to
	// item-level memberliability. Category codes match whatever their
	// system. Sums are exact; a sum across currencies is treated as absent.
	PatientShare       *Money
	IsPreauthorization bool
}

// LogValue keeps the facts out of logs.
func (EOBFacts) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// eobProbe reads what samply's model hides: whether use and outcome are
// present at all (its enums decode absence as the first code) and the
// contained resources (which it does not model).
type eobProbe struct {
	ResourceType string            `json:"resourceType"`
	Use          *string           `json:"use"`
	Outcome      *string           `json:"outcome"`
	Contained    []json.RawMessage `json:"contained"`
}

// eobDoc reads an EOB in one pass: samply's model and, shadowing its use
// and outcome, what eobProbe reads.
type eobDoc struct {
	fhir.ExplanationOfBenefit
	ResourceType string            `json:"resourceType"`
	Use          json.RawMessage   `json:"use"`
	Outcome      json.RawMessage   `json:"outcome"`
	Contained    []json.RawMessage `json:"contained"`
}

// decodeEOB decodes an EOB whose JSON checkJSON has passed. Each
// json.Unmarshal reads its input twice (validation, then decoding), and
// the probe and samply's model were two: one decode does both. When it
// fails, the probe and the model are decoded one after the other, as
// before, so that the error is the one they give.
func decodeEOB(eob []byte) (eobProbe, fhir.ExplanationOfBenefit, error) {
	var d eobDoc
	err := json.Unmarshal(eob, &d)
	if err == nil && d.ResourceType == "ExplanationOfBenefit" {
		probe := eobProbe{ResourceType: d.ResourceType, Contained: d.Contained}
		e := d.ExplanationOfBenefit
		var use, outcome string
		if len(d.Use) > 0 {
			err = errors.Join(err, json.Unmarshal(d.Use, &use), e.Use.UnmarshalJSON(d.Use))
			probe.Use = &use
		}
		if len(d.Outcome) > 0 {
			err = errors.Join(err, json.Unmarshal(d.Outcome, &outcome), e.Outcome.UnmarshalJSON(d.Outcome))
			probe.Outcome = &outcome
		}
		if err == nil {
			return probe, e, nil
		}
	}
	return decodeEOBCarefully(eob)
}

// decodeEOBCarefully decodes the probe, then samply's model.
func decodeEOBCarefully(eob []byte) (eobProbe, fhir.ExplanationOfBenefit, error) {
	var probe eobProbe
	if err := json.Unmarshal(eob, &probe); err != nil {
		return probe, fhir.ExplanationOfBenefit{}, decodeError("ExplanationOfBenefit", err)
	}
	if probe.ResourceType != "ExplanationOfBenefit" {
		return probe, fhir.ExplanationOfBenefit{}, fmt.Errorf("%w: resourceType is not ExplanationOfBenefit", ErrMalformed)
	}
	e, err := fhir.UnmarshalExplanationOfBenefit(eob)
	if err != nil {
		return probe, e, decodeError("ExplanationOfBenefit", err)
	}
	return probe, e, nil
}

// EOBFactsFrom builds facts from the focus EOB and the related resources
// (Event.Related); the EOB's contained resources are used as well.
// References resolve as in a Bundle, except that related resources have no
// fullUrl, so a urn:uuid resolves to a resource whose id is that uuid.
//
// Event.EOBFacts does the same with the fullUrls the notification gave the
// related resources, so a urn:uuid also resolves when it is not the id.
func EOBFactsFrom(eob json.RawMessage, related []json.RawMessage) (EOBFacts, error) {
	return eobFacts(eob, false, related, nil)
}

// EOBFacts builds facts from the event's focus and related resources,
// resolving references by the fullUrls they had in the notification too.
func (e Event) EOBFacts() (EOBFacts, error) {
	return eobFacts(e.Focus, e.Guarded, e.Related, e.RelatedURLs)
}

// eobFacts is EOBFactsFrom with optional fullUrls, index-aligned with
// related.
func eobFacts(eob json.RawMessage, guarded bool, related []json.RawMessage, urls []string) (EOBFacts, error) {
	var f EOBFacts
	if !guarded {
		if err := checkJSON(eob, "ExplanationOfBenefit"); err != nil {
			return f, err
		}
	}
	if firstNonSpace(eob) != '{' {
		return f, fmt.Errorf("%w: ExplanationOfBenefit is not a JSON object", ErrMalformed)
	}
	probe, e, err := decodeEOB(eob)
	if err != nil {
		return f, err
	}
	ix, err := relatedIndex(probe.Contained, related, urls)
	if err != nil {
		return f, err
	}

	f.ID = deref(e.Id)
	if e.Meta != nil {
		f.VersionID = deref(e.Meta.VersionId)
	}
	if probe.Use != nil {
		f.Use = e.Use.Code()
	}
	if probe.Outcome != nil {
		f.Outcome = e.Outcome.Code()
	}
	f.IsPreauthorization = f.Use == "preauthorization"
	f.PatientRef = deref(e.Patient.Reference)
	f.PatientID = patientID(ix, f.PatientRef)
	f.PayerName = deref(e.Insurer.Display)
	if f.PayerName == "" {
		f.PayerName = partyName(ix, deref(e.Insurer.Reference), 0)
	}
	f.ProviderName = deref(e.Provider.Display)
	if f.ProviderName == "" {
		f.ProviderName = partyName(ix, deref(e.Provider.Reference), 0)
	}
	f.ServiceDate = serviceDate(e)
	f.PatientShare = patientShare(e)
	f.Diagnoses = diagnoses(e.Diagnosis, probe.Contained)
	return f, nil
}

// diagnoses lists the codings DiagnosisCodes lists, from an EOB already
// decoded: each diagnosis's concept, and the code of a contained Condition
// its reference names.
func diagnoses(ds []fhir.ExplanationOfBenefitDiagnosis, contained []json.RawMessage) []Coding {
	var out []Coding
	var conditions map[string][]Coding // by id, read when first needed
	for _, d := range ds {
		for _, c := range d.DiagnosisCodeableConcept.Coding {
			if code := deref(c.Code); code != "" {
				out = append(out, Coding{System: deref(c.System), Code: code})
			}
		}
		ref := deref(d.DiagnosisReference.Reference)
		if len(ref) < 2 || ref[0] != '#' {
			continue
		}
		if conditions == nil {
			conditions = map[string][]Coding{}
			for _, raw := range contained {
				var r struct {
					ResourceType string `json:"resourceType"`
					ID           string `json:"id"`
					Code         struct {
						Coding []struct{ System, Code string } `json:"coding"`
					} `json:"code"`
				}
				if json.Unmarshal(raw, &r) != nil || r.ResourceType != "Condition" {
					continue
				}
				for _, c := range r.Code.Coding {
					if c.Code != "" {
						conditions[r.ID] = append(conditions[r.ID], Coding{System: c.System, Code: c.Code})
					}
				}
			}
		}
		out = append(out, conditions[ref[1:]]...)
	}
	return out
}

// relatedIndex indexes contained resources ("#id") and related ones, the
// latter under their fullUrl when urls has one.
func relatedIndex(contained, related []json.RawMessage, urls []string) (*resourceIndex, error) {
	ix := newResourceIndex()
	for _, c := range contained {
		var h resourceHead
		if json.Unmarshal(c, &h) == nil && h.ResourceType != "" {
			ix.addContained(c, h)
		}
	}
	if len(related) > MaxEntries {
		return nil, fmt.Errorf("%w: more than %d related resources", ErrMalformed, MaxEntries)
	}
	for i, r := range related {
		what := fmt.Sprintf("related[%d]", i)
		if err := checkJSON(r, what); err != nil {
			return nil, err
		}
		if firstNonSpace(r) != '{' {
			return nil, fmt.Errorf("%w: %s is not a JSON object", ErrMalformed, what)
		}
		var h resourceHead
		if err := json.Unmarshal(r, &h); err != nil {
			return nil, decodeError(what, err)
		}
		ix.add(urlAt(urls, i), r, h)
	}
	return ix, nil
}

// patientID finds the logical id of the referenced patient.
func patientID(ix *resourceIndex, ref string) string {
	if i, ok := ix.resolve(ref); ok {
		if it := ix.items[i]; it.head.ResourceType == "Patient" && !it.contained {
			return it.head.ID
		}
	}
	if p := parseReference(ref); (p.Kind == refRelative || p.Kind == refAbsolute) && p.Type == "Patient" {
		return p.ID
	}
	return ""
}

// nameView reads the name of an Organization, Practitioner or
// PractitionerRole (the last through its references).
type nameView struct {
	ResourceType string          `json:"resourceType"`
	Name         json.RawMessage `json:"name"`
	Practitioner *fhir.Reference `json:"practitioner"`
	Organization *fhir.Reference `json:"organization"`
}

type humanName struct {
	Use    string   `json:"use"`
	Text   string   `json:"text"`
	Family string   `json:"family"`
	Given  []string `json:"given"`
}

// partyName resolves ref and returns the resource's display name, or "".
func partyName(ix *resourceIndex, ref string, depth int) string {
	i, ok := ix.resolve(ref)
	if !ok || depth > 2 {
		return ""
	}
	var v nameView
	if json.Unmarshal(ix.items[i].raw, &v) != nil {
		return ""
	}
	switch v.ResourceType {
	case "Organization", "Location", "HealthcareService", "InsurancePlan":
		var s string
		if json.Unmarshal(v.Name, &s) == nil {
			return strings.TrimSpace(s)
		}
	case "Practitioner", "RelatedPerson", "Patient":
		var names []humanName
		if json.Unmarshal(v.Name, &names) == nil {
			return personName(names)
		}
	case "PractitionerRole":
		for _, r := range []*fhir.Reference{v.Practitioner, v.Organization} {
			if r == nil {
				continue
			}
			if s := deref(r.Display); s != "" {
				return s
			}
			if s := partyName(ix, deref(r.Reference), depth+1); s != "" {
				return s
			}
		}
	}
	return ""
}

// personName picks the official (else usual, else first) name and renders
// it as its text, else given names and family.
func personName(names []humanName) string {
	if len(names) == 0 {
		return ""
	}
	best := names[0]
pick:
	for _, want := range []string{"official", "usual"} {
		for _, n := range names {
			if n.Use == want {
				best = n
				break pick
			}
		}
	}
	if t := strings.TrimSpace(best.Text); t != "" {
		return t
	}
	parts := append([]string{}, best.Given...)
	if best.Family != "" {
		parts = append(parts, best.Family)
	}
	return strings.TrimSpace(strings.Join(parts, " "))
}

// serviceDate picks the date of service; see EOBFacts.ServiceDate.
func serviceDate(e fhir.ExplanationOfBenefit) string {
	if e.BillablePeriod != nil {
		if d := dateOnly(deref(e.BillablePeriod.Start)); d != "" {
			return d
		}
	}
	earliest := ""
	consider := func(date *string, period *fhir.Period) {
		d := dateOnly(deref(date))
		if d == "" && period != nil {
			d = dateOnly(deref(period.Start))
		}
		if d != "" && (earliest == "" || d < earliest) {
			earliest = d
		}
	}
	for _, it := range e.Item {
		consider(it.ServicedDate, it.ServicedPeriod)
	}
	for _, it := range e.AddItem {
		consider(it.ServicedDate, it.ServicedPeriod)
	}
	if earliest != "" {
		return earliest
	}
	return dateOnly(e.Created)
}

// dateOnly returns the YYYY-MM-DD part of a FHIR date or dateTime, or ""
// when s has no full date (e.g. "2019" or "2019-10").
func dateOnly(s string) string {
	if len(s) < 10 {
		return ""
	}
	d := s[:10]
	for i := 0; i < 10; i++ {
		c := d[i]
		if i == 4 || i == 7 {
			if c != '-' {
				return ""
			}
		} else if c < '0' || c > '9' {
			return ""
		}
	}
	if len(s) > 10 && s[10] != 'T' {
		return ""
	}
	return d
}

// hasCode reports whether cc carries one of codes, in any system.
func hasCode(cc fhir.CodeableConcept, codes ...string) bool {
	for _, c := range cc.Coding {
		for _, want := range codes {
			if deref(c.Code) == want {
				return true
			}
		}
	}
	return false
}

// moneyOf reads an amount. One whose value we cannot read exactly (say
// 1e70) counts as absent: a notice must not show it.
func moneyOf(m *fhir.Money) (Money, bool) {
	if m == nil || m.Value == nil {
		return Money{}, false
	}
	if _, ok := parseDecimal(m.Value.String()); !ok {
		return Money{}, false
	}
	return Money{Value: m.Value.String(), Currency: deref(m.Currency)}, true
}

// adjudicated collects the amounts of adjudications in the given categories.
func adjudicated(adj []fhir.ExplanationOfBenefitItemAdjudication, codes ...string) []Money {
	var out []Money
	for _, a := range adj {
		if hasCode(a.Category, codes...) {
			if m, ok := moneyOf(a.Amount); ok {
				out = append(out, m)
			}
		}
	}
	return out
}

// adjLevel is one level of an EOB's line items (item, detail, subDetail;
// addItem and its details likewise) with the levels below it.
type adjLevel struct {
	adj   []fhir.ExplanationOfBenefitItemAdjudication
	below []adjLevel
}

// itemLevel sums a category over items without counting a level twice: an
// item's own adjudication wins over its details', a detail's over its
// subDetails'.
func itemLevel(e fhir.ExplanationOfBenefit, codes ...string) []Money {
	var levels []adjLevel
	for _, it := range e.Item {
		l := adjLevel{adj: it.Adjudication}
		for _, d := range it.Detail {
			dl := adjLevel{adj: d.Adjudication}
			for _, sd := range d.SubDetail {
				dl.below = append(dl.below, adjLevel{adj: sd.Adjudication})
			}
			l.below = append(l.below, dl)
		}
		levels = append(levels, l)
	}
	for _, it := range e.AddItem {
		l := adjLevel{adj: it.Adjudication}
		for _, d := range it.Detail {
			dl := adjLevel{adj: d.Adjudication}
			for _, sd := range d.SubDetail {
				dl.below = append(dl.below, adjLevel{adj: sd.Adjudication})
			}
			l.below = append(l.below, dl)
		}
		levels = append(levels, l)
	}
	return sumLevels(levels, codes)
}

// sumLevels takes each level's own amounts, or else those of the levels below.
func sumLevels(levels []adjLevel, codes []string) []Money {
	var out []Money
	for _, l := range levels {
		if own := adjudicated(l.adj, codes...); len(own) > 0 {
			out = append(out, own...)
			continue
		}
		out = append(out, sumLevels(l.below, codes)...)
	}
	return out
}

// totalOf returns the first total in the given categories that has a value.
func totalOf(e fhir.ExplanationOfBenefit, codes ...string) (Money, bool) {
	for _, t := range e.Total {
		if hasCode(t.Category, codes...) {
			if m, ok := moneyOf(&t.Amount); ok {
				return m, true
			}
		}
	}
	return Money{}, false
}

// patientShare implements the order documented on EOBFacts.PatientShare.
func patientShare(e fhir.ExplanationOfBenefit) *Money {
	if m, ok := totalOf(e, "memberliability"); ok {
		return &m
	}
	if m, ok := sumMoney(adjudicated(e.Adjudication, "memberliability")); ok {
		return &m
	}
	if m, ok := sumMoney(itemLevel(e, "memberliability")); ok {
		return &m
	}
	if m, ok := totalOf(e, "paidbypatient", "patientpay"); ok {
		return &m
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// urlAt returns urls[i], or "" when urls is shorter.
func urlAt(urls []string, i int) string {
	if i < len(urls) {
		return urls[i]
	}
	return ""
}
