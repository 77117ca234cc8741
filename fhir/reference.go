package fhir

import (
	"encoding/json"
	"net/url"
	"strings"
)

// refKind says how a Reference.reference string is written.
type refKind int

const (
	refOther       refKind = iota
	refContained           // "#id"
	refURN                 // "urn:uuid:..." or "urn:oid:..."
	refRelative            // "Type/id" or "Type/id/_history/v"
	refAbsolute            // "https://host/base/Type/id[/_history/v]"
	refConditional         // "Type?identifier=system|value"
)

// parsedRef is a reference string taken apart. Type, ID and Version are
// filled when the string names them.
type parsedRef struct {
	Kind    refKind
	Raw     string
	Type    string
	ID      string
	Version string
	Query   string // conditional references only
}

// parseReference splits a FHIR reference string. It never fails: a string it
// cannot read comes back as refOther with only Raw set.
func parseReference(ref string) parsedRef {
	p := parsedRef{Raw: ref}
	switch {
	case ref == "":
		return p
	case strings.HasPrefix(ref, "#"):
		p.Kind = refContained
		p.ID = ref[1:]
		return p
	case strings.HasPrefix(ref, "urn:uuid:"), strings.HasPrefix(ref, "urn:oid:"):
		p.Kind = refURN
		p.ID = ref[strings.LastIndexByte(ref, ':')+1:]
		return p
	}
	if i := strings.IndexByte(ref, '?'); i > 0 {
		if typ := ref[:i]; isResourceType(typ) {
			p.Kind, p.Type, p.Query = refConditional, typ, ref[i+1:]
		}
		return p
	}
	absolute := strings.Contains(ref, "://")
	segs := strings.Split(ref, "/")
	if n := len(segs); n >= 4 && segs[n-2] == "_history" {
		p.Version = segs[n-1]
		segs = segs[:n-2]
	}
	n := len(segs)
	if n < 2 || !isResourceType(segs[n-2]) || !isID(segs[n-1]) {
		return parsedRef{Raw: ref}
	}
	if p.Version != "" && !isID(p.Version) {
		return parsedRef{Raw: ref}
	}
	p.Type, p.ID = segs[n-2], segs[n-1]
	switch {
	case absolute:
		p.Kind = refAbsolute
	case n == 2:
		p.Kind = refRelative
	default:
		return parsedRef{Raw: ref}
	}
	return p
}

// typeID is the "Type/id" key of a parsed reference, or "".
func (p parsedRef) typeID() string {
	if p.Type == "" || p.ID == "" {
		return ""
	}
	return p.Type + "/" + p.ID
}

// isResourceType reports whether s looks like a FHIR resource type name.
func isResourceType(s string) bool {
	if s == "" || len(s) > 64 || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// isID reports whether s matches the FHIR id datatype ([A-Za-z0-9\-\.]{1,64}).
func isID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// resourceHead is the part of any resource that indexing needs.
type resourceHead struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Meta         *struct {
		VersionID string   `json:"versionId"`
		Profile   []string `json:"profile"`
	} `json:"meta"`
}

func (h resourceHead) versionID() string {
	if h.Meta == nil {
		return ""
	}
	return h.Meta.VersionID
}

// indexedResource is one resource that references can resolve to.
type indexedResource struct {
	fullURL   string
	raw       json.RawMessage
	head      resourceHead
	contained bool
}

// resourceIndex resolves reference strings to resources: by fullUrl, by
// "Type/id" (also the tail of an absolute URL), by urn:uuid (fullUrl, or an
// id equal to the uuid), by "#id" for contained resources, and conditional
// "Type?identifier=system|value" references by identifier.
type resourceIndex struct {
	items     []indexedResource
	byFullURL map[string][]int
	byTypeID  map[string][]int
	byID      map[string][]int
	contained map[string]int

	// Memos keep hostile Bundles (thousands of references, or of entries
	// sharing an id) from costing more than linear work.
	refs       map[int][]string
	resolved   map[string]resolution
	identifier map[string][]int // "Type|system|value" and "Type||value"
}

type resolution struct {
	pos int
	ok  bool
}

// Work bounds for reference resolution. Hitting one leaves a reference
// unresolved, which only ever makes Related smaller.
const (
	maxRefsPerResource = 1000  // references read from one resource
	maxCandidates      = 100   // entries examined for one reference
	maxResolvesPerWalk = 10000 // references followed for one focus
)

func newResourceIndex() *resourceIndex {
	return &resourceIndex{
		byFullURL: make(map[string][]int),
		byTypeID:  make(map[string][]int),
		byID:      make(map[string][]int),
		contained: make(map[string]int),
		refs:      make(map[int][]string),
		resolved:  make(map[string]resolution),
	}
}

// add indexes raw under fullURL (may be ""). It returns the item's position.
func (ix *resourceIndex) add(fullURL string, raw json.RawMessage, head resourceHead) int {
	i := len(ix.items)
	ix.items = append(ix.items, indexedResource{fullURL: fullURL, raw: raw, head: head})
	if fullURL != "" {
		ix.byFullURL[fullURL] = append(ix.byFullURL[fullURL], i)
		if p := parseReference(fullURL); p.Kind == refAbsolute && p.Type == head.ResourceType {
			ix.byTypeID[p.typeID()] = append(ix.byTypeID[p.typeID()], i)
		}
	}
	if head.ResourceType != "" && head.ID != "" {
		key := head.ResourceType + "/" + head.ID
		if l := ix.byTypeID[key]; len(l) == 0 || l[len(l)-1] != i {
			ix.byTypeID[key] = append(ix.byTypeID[key], i)
		}
		ix.byID[head.ID] = append(ix.byID[head.ID], i)
	}
	return i
}

// addContained indexes a contained resource under "#id".
func (ix *resourceIndex) addContained(raw json.RawMessage, head resourceHead) {
	if head.ID == "" {
		return
	}
	if _, dup := ix.contained[head.ID]; dup {
		return
	}
	i := len(ix.items)
	ix.items = append(ix.items, indexedResource{raw: raw, head: head, contained: true})
	ix.contained[head.ID] = i
}

// resolve finds the resource a reference string points to. The second
// result is false when nothing in the index matches.
func (ix *resourceIndex) resolve(ref string) (int, bool) {
	if r, ok := ix.resolved[ref]; ok {
		return r.pos, r.ok
	}
	pos, ok := ix.resolveUncached(ref)
	ix.resolved[ref] = resolution{pos, ok}
	return pos, ok
}

func (ix *resourceIndex) resolveUncached(ref string) (int, bool) {
	p := parseReference(ref)
	pick := func(cands []int) (int, bool) {
		if len(cands) > maxCandidates {
			cands = cands[:maxCandidates]
		}
		for _, i := range cands {
			it := ix.items[i]
			if p.Type != "" && it.head.ResourceType != p.Type {
				continue
			}
			if p.Version != "" && it.head.versionID() != "" && it.head.versionID() != p.Version {
				continue
			}
			return i, true
		}
		return 0, false
	}
	switch p.Kind {
	case refContained:
		i, ok := ix.contained[p.ID]
		return i, ok
	case refURN:
		if i, ok := pick(ix.byFullURL[ref]); ok {
			return i, true
		}
		return pick(ix.byID[p.ID])
	case refAbsolute:
		if i, ok := pick(ix.byFullURL[ref]); ok {
			return i, true
		}
		if p.Version != "" {
			base := ref[:strings.LastIndex(ref, "/_history/")]
			if i, ok := pick(ix.byFullURL[base]); ok {
				return i, true
			}
		}
		return pick(ix.byTypeID[p.typeID()])
	case refRelative:
		return pick(ix.byTypeID[p.typeID()])
	case refConditional:
		return ix.resolveConditional(p)
	}
	if ref != "" {
		return pick(ix.byFullURL[ref])
	}
	return 0, false
}

// resolveConditional handles "Type?identifier=[system|]value", the only
// search a conditional reference in a transaction Bundle commonly uses.
func (ix *resourceIndex) resolveConditional(p parsedRef) (int, bool) {
	q, err := url.ParseQuery(p.Query)
	if err != nil || len(q) != 1 || len(q["identifier"]) != 1 {
		return 0, false
	}
	token := q.Get("identifier")
	system, value, hasSystem := strings.Cut(token, "|")
	if !hasSystem {
		system, value = "", token
	}
	if ix.identifier == nil {
		ix.buildIdentifierIndex()
	}
	key := p.Type + "|" + system + "|" + value
	if !hasSystem {
		key = p.Type + "||" + value
	}
	// A conditional reference that matches several resources is ambiguous;
	// resolve nothing rather than guess.
	if m := ix.identifier[key]; len(m) == 1 {
		return m[0], true
	}
	return 0, false
}

// buildIdentifierIndex reads every resource's identifiers once.
func (ix *resourceIndex) buildIdentifierIndex() {
	ix.identifier = make(map[string][]int)
	for i, it := range ix.items {
		if it.contained {
			continue
		}
		var ids struct {
			Identifier []struct {
				System string `json:"system"`
				Value  string `json:"value"`
			} `json:"identifier"`
		}
		if json.Unmarshal(it.raw, &ids) != nil {
			continue
		}
		seen := make(map[string]bool)
		for _, id := range ids.Identifier {
			for _, k := range []string{it.head.ResourceType + "|" + id.System + "|" + id.Value, it.head.ResourceType + "||" + id.Value} {
				if !seen[k] {
					seen[k] = true
					ix.identifier[k] = append(ix.identifier[k], i)
				}
			}
		}
	}
}

// collectReferences returns every Reference.reference string inside a JSON
// value, in document order, without duplicates: each string value of a key
// "reference". The value has passed checkJSON, so it is read byte by byte
// as valid JSON (every notice's focus is walked: encoding/json's tokens
// took a tenth of intake's time).
func collectReferences(raw json.RawMessage) []string {
	type frame struct {
		object bool
		refKey bool // the object's current key is "reference"
	}
	stack := make([]frame, 0, 16)
	seen := make(map[string]struct{})
	var out []string
	prev := byte(0) // the last structural byte or value outside strings
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch c {
		case '"':
			j, escaped := i+1, false // escaped: not plain ASCII, decoded as encoding/json decodes it
			for ; j < len(raw) && raw[j] != '"'; j++ {
				switch {
				case raw[j] == '\\':
					escaped = true
					j++
				case raw[j] >= 0x80:
					escaped = true
				}
			}
			n := len(stack)
			switch {
			case n == 0 || !stack[n-1].object:
			case prev == '{' || prev == ',':
				stack[n-1].refKey = unquoted(raw[i:j+1], escaped) == "reference"
			case prev == ':' && stack[n-1].refKey:
				if t := unquoted(raw[i:j+1], escaped); t != "" {
					if _, dup := seen[t]; !dup {
						seen[t] = struct{}{}
						out = append(out, t)
						if len(out) >= maxRefsPerResource {
							return out
						}
					}
				}
			}
			i, prev = j, '"'
		case '{', '[':
			stack = append(stack, frame{object: c == '{'})
			prev = c
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			prev = c
		case ' ', '\t', '\n', '\r':
		default:
			prev = c
		}
	}
	return out
}

// unquoted is a JSON string literal's text (q includes the quotes).
func unquoted(q []byte, escaped bool) string {
	if !escaped {
		return string(q[1 : len(q)-1])
	}
	var s string
	if json.Unmarshal(q, &s) != nil {
		return ""
	}
	return s
}

// relatedTypes are the resource types a focus may carry along as Related:
// the parties and places a notice may need to name or reach. Clinical
// resources (Observation, Condition, Encounter, Claim...) never travel.
var relatedTypes = map[string]bool{
	"Patient":           true,
	"RelatedPerson":     true,
	"Person":            true,
	"Organization":      true,
	"Practitioner":      true,
	"PractitionerRole":  true,
	"Location":          true,
	"HealthcareService": true,
	"Coverage":          true,
	"InsurancePlan":     true,
}

// relatedDepth is how many reference hops from the focus Related follows:
// the focus's own references, and theirs (PractitionerRole → Practitioner,
// Coverage → payor Organization).
const relatedDepth = 2

// related returns the index positions of the resources the focus at
// position focus references (directly or one hop further through another
// related resource), limited to relatedTypes, in discovery order. extra
// holds further reference strings to follow (additional-context).
func (ix *resourceIndex) related(focus int, extra []string) []int {
	seen := map[int]bool{focus: true}
	var out []int
	var frontier []int
	budget := maxResolvesPerWalk
	take := func(refs []string) {
		for _, r := range refs {
			if budget == 0 {
				return
			}
			budget--
			i, ok := ix.resolve(r)
			if !ok || seen[i] || ix.items[i].contained || !relatedTypes[ix.items[i].head.ResourceType] {
				continue
			}
			seen[i] = true
			out = append(out, i)
			frontier = append(frontier, i)
		}
	}
	take(ix.referencesOf(focus))
	take(extra)
	for hop := 1; hop < relatedDepth; hop++ {
		cur := frontier
		frontier = nil
		for _, i := range cur {
			take(ix.referencesOf(i))
		}
	}
	return out
}

// referencesOf returns (and remembers) the references inside item i.
func (ix *resourceIndex) referencesOf(i int) []string {
	if r, ok := ix.refs[i]; ok {
		return r
	}
	r := collectReferences(ix.items[i].raw)
	ix.refs[i] = r
	return r
}
