package fhir

import (
	"encoding/json"
	"sort"
)

// codeListSystemsSkipped are code systems whose codes say nothing about
// the patient (e.g. data-absent-reason's "not-applicable").
var codeListSystemsSkipped = map[string]bool{
	"http://terminology.hl7.org/CodeSystem/data-absent-reason": true,
}

// nonClinicalContained are contained resource types whose codes are
// administrative; every other contained resource (Condition, Procedure,
// ServiceRequest, MedicationRequest, Claim...) contributes all its codes.
var nonClinicalContained = map[string]bool{
	"Coverage": true, "Organization": true, "Practitioner": true, "PractitionerRole": true,
	"Patient": true, "RelatedPerson": true, "Location": true, "InsurancePlan": true,
}

// SensitiveCodes lists the codes in an ExplanationOfBenefit that must never
// reach a notice: diagnosis codes (and their DRG packageCode), procedure
// codes, item / detail / subDetail / addItem productOrService, revenue,
// modifier and programCode codes (CPT, HCPCS, NDC, CDT, SNOMED...), the DRG
// carried in supportingInfo, and every code of clinical contained resources.
// It reads the JSON loosely so that nothing hides behind a shape error, and
// returns the codes sorted and without duplicates (nil when there are none
// or the input is not JSON). Codes can be short ("1", "140"): match them as
// whole tokens, not substrings.
func SensitiveCodes(eob json.RawMessage) []string {
	if checkJSON(eob, "ExplanationOfBenefit") != nil {
		return nil
	}
	var root map[string]any
	if json.Unmarshal(eob, &root) != nil {
		return nil
	}
	set := make(map[string]struct{})
	concept := func(v any) {
		cc, _ := v.(map[string]any)
		codings, _ := cc["coding"].([]any)
		for _, c := range codings {
			cm, _ := c.(map[string]any)
			code, _ := cm["code"].(string)
			system, _ := cm["system"].(string)
			if code != "" && !codeListSystemsSkipped[system] {
				set[code] = struct{}{}
			}
		}
	}
	concepts := func(v any) {
		if list, ok := v.([]any); ok {
			for _, c := range list {
				concept(c)
			}
			return
		}
		concept(v)
	}
	objects := func(v any) []map[string]any {
		list, _ := v.([]any)
		out := make([]map[string]any, 0, len(list))
		for _, x := range list {
			if m, ok := x.(map[string]any); ok {
				out = append(out, m)
			}
		}
		return out
	}
	for _, d := range objects(root["diagnosis"]) {
		concept(d["diagnosisCodeableConcept"])
		concept(d["packageCode"])
	}
	for _, p := range objects(root["procedure"]) {
		concept(p["procedureCodeableConcept"])
	}
	for _, s := range objects(root["supportingInfo"]) {
		cat, _ := s["category"].(map[string]any)
		if hasCodeLoose(cat, "drg") {
			concept(s["code"])
		}
	}
	lineCodes := func(line map[string]any) {
		concept(line["productOrService"])
		concept(line["revenue"])
		concepts(line["modifier"])
		concepts(line["programCode"])
	}
	for _, key := range []string{"item", "addItem"} {
		for _, it := range objects(root[key]) {
			lineCodes(it)
			for _, d := range objects(it["detail"]) {
				lineCodes(d)
				for _, sd := range objects(d["subDetail"]) {
					lineCodes(sd)
				}
			}
		}
	}
	for _, c := range objects(root["contained"]) {
		if rt, _ := c["resourceType"].(string); nonClinicalContained[rt] {
			continue
		}
		allCodes(c, set)
	}
	if len(set) == 0 {
		return nil
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// hasCodeLoose reports whether a decoded CodeableConcept carries code.
func hasCodeLoose(cc map[string]any, code string) bool {
	codings, _ := cc["coding"].([]any)
	for _, c := range codings {
		if cm, ok := c.(map[string]any); ok && cm["code"] == code {
			return true
		}
	}
	return false
}

// allCodes adds every Coding.code found anywhere under v.
func allCodes(v any, set map[string]struct{}) {
	switch t := v.(type) {
	case map[string]any:
		if codings, ok := t["coding"].([]any); ok {
			for _, c := range codings {
				if cm, ok := c.(map[string]any); ok {
					code, _ := cm["code"].(string)
					system, _ := cm["system"].(string)
					if code != "" && !codeListSystemsSkipped[system] {
						set[code] = struct{}{}
					}
				}
			}
		}
		for _, c := range t {
			allCodes(c, set)
		}
	case []any:
		for _, c := range t {
			allCodes(c, set)
		}
	}
}

// Coding is a code with its system.
type Coding struct {
	System string
	Code   string
}

// DiagnosisCodes lists an ExplanationOfBenefit's diagnosis codings
// (diagnosisCodeableConcept, and the code of a contained Condition named by
// diagnosisReference), so callers can compute coarse flags such as "has a
// sensitive diagnosis" without carrying the codes onward. Nil for input that
// is not an EOB.
func DiagnosisCodes(eob json.RawMessage) []Coding {
	if checkJSON(eob, "ExplanationOfBenefit") != nil {
		return nil
	}
	var doc struct {
		Contained []struct {
			ResourceType string `json:"resourceType"`
			ID           string `json:"id"`
			Code         struct {
				Coding []struct{ System, Code string } `json:"coding"`
			} `json:"code"`
		} `json:"contained"`
		Diagnosis []struct {
			Concept struct {
				Coding []struct{ System, Code string } `json:"coding"`
			} `json:"diagnosisCodeableConcept"`
			Reference struct {
				Reference string `json:"reference"`
			} `json:"diagnosisReference"`
		} `json:"diagnosis"`
	}
	if json.Unmarshal(eob, &doc) != nil {
		return nil
	}
	var out []Coding
	for _, d := range doc.Diagnosis {
		for _, c := range d.Concept.Coding {
			if c.Code != "" {
				out = append(out, Coding{System: c.System, Code: c.Code})
			}
		}
		if ref := d.Reference.Reference; len(ref) > 1 && ref[0] == '#' {
			for _, r := range doc.Contained {
				if r.ResourceType == "Condition" && r.ID == ref[1:] {
					for _, c := range r.Code.Coding {
						if c.Code != "" {
							out = append(out, Coding{System: c.System, Code: c.Code})
						}
					}
				}
			}
		}
	}
	return out
}
