// Package valueset owns the sensitive-diagnosis value sets that compliance
// keeps as data in rego/data/sensitive.json, and classifies codes (an
// EOB's diagnoses; an Appointment's reasons, service and specialty) into
// coarse categories (mental_health, substance_use, hiv_sti,
// reproductive_health, genetic) so that notices and policies can use the
// category without ever carrying the codes onward.
package valueset

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/tidings-health/tidings/fhir"
)

// Path is where the value sets live in the policy bundle.
const Path = "data/sensitive.json"

// ICD-10-CM systems read by the value sets.
var icd10Systems = map[string]bool{
	"http://hl7.org/fhir/sid/icd-10-cm": true,
	"http://hl7.org/fhir/sid/icd-10":    true,
}

// snomedSystem is SNOMED CT's system URI.
const snomedSystem = "http://snomed.info/sct"

// Category is one sensitive category as published in the data file.
type Category struct {
	Title  string      `json:"title"`
	Source string      `json:"source"`
	Ranges [][2]string `json:"ranges"`
	Codes  []string    `json:"codes"`
	// SNOMED are SNOMED CT concept ids, matched exactly (no subsumption:
	// Tidings has no terminology server), and SNOMEDSource names them.
	SNOMED       []string `json:"snomed"`
	SNOMEDSource string   `json:"snomed_source"`
}

// Sets are the loaded categories.
type Sets struct {
	categories map[string]Category
	names      []string
	snomed     map[string][]string // concept id → categories
}

// Load reads the value sets from the policy bundle (rego.FS, or a directory).
func Load(fsys fs.FS) (*Sets, error) {
	raw, err := fs.ReadFile(fsys, Path)
	if err != nil {
		return nil, fmt.Errorf("valueset: %w", err)
	}
	var doc struct {
		Sensitive struct {
			Categories map[string]Category `json:"categories"`
		} `json:"sensitive"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("valueset: %s: %w", Path, err)
	}
	s := &Sets{categories: doc.Sensitive.Categories, snomed: map[string][]string{}}
	var problems []string
	for name, c := range s.categories {
		s.names = append(s.names, name)
		if c.Source == "" {
			problems = append(problems, name+": no source named")
		}
		for _, r := range c.Ranges {
			if !isCategory(r[0]) || !isCategory(r[1]) || r[0] > r[1] {
				problems = append(problems, fmt.Sprintf("%s: range %v is not two three-character ICD-10-CM categories in order", name, r))
			}
		}
		for _, code := range c.Codes {
			if len(code) < 3 || strings.ContainsAny(code, ". ") || !isCategory(code[:3]) {
				problems = append(problems, fmt.Sprintf("%s: code prefix %q must be a dot-less ICD-10-CM code", name, code))
			}
		}
		if len(c.SNOMED) > 0 && c.SNOMEDSource == "" {
			problems = append(problems, name+": SNOMED CT concepts without a snomed_source")
		}
		for _, id := range c.SNOMED {
			if !isSCTID(id) {
				problems = append(problems, fmt.Sprintf("%s: %q is not a SNOMED CT concept id", name, id))
			}
			s.snomed[id] = append(s.snomed[id], name)
		}
	}
	if len(s.categories) == 0 {
		problems = append(problems, "no categories")
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, fmt.Errorf("valueset: %s: %s", Path, strings.Join(problems, "; "))
	}
	sort.Strings(s.names)
	return s, nil
}

func isCategory(s string) bool {
	return len(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= '0' && s[1] <= '9' && (s[2] >= '0' && s[2] <= '9' || s[2] >= 'A' && s[2] <= 'Z')
}

// isSCTID reports whether s has the shape of a SNOMED CT identifier: 6 to
// 18 digits, no leading zero.
func isSCTID(s string) bool {
	if len(s) < 6 || len(s) > 18 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Categories returns the sorted, distinct sensitive categories the codings
// fall into: ICD-10-CM codes by range and prefix, SNOMED CT concepts by
// exact id. Codes of other systems are not judged.
func (s *Sets) Categories(codings []fhir.Coding) []string {
	hit := map[string]bool{}
	for _, c := range codings {
		if c.System == snomedSystem {
			for _, name := range s.snomed[strings.TrimSpace(c.Code)] {
				hit[name] = true
			}
			continue
		}
		if !icd10Systems[c.System] {
			continue
		}
		code := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(c.Code), ".", ""))
		if len(code) < 3 || !isCategory(code[:3]) {
			continue
		}
		for _, name := range s.names {
			if hit[name] {
				continue
			}
			cat := s.categories[name]
			for _, r := range cat.Ranges {
				if code[:3] >= r[0] && code[:3] <= r[1] {
					hit[name] = true
				}
			}
			for _, p := range cat.Codes {
				if strings.HasPrefix(code, p) {
					hit[name] = true
				}
			}
		}
	}
	out := make([]string, 0, len(hit))
	for name := range hit {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}
